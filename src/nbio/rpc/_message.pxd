# Declarations of the arpc wire format core (see _message.pyx).

from libc.stdint cimport uint32_t, uint64_t


cdef enum:
    HEADER_SIZE = 16
    MAX_METHOD_LEN = 127
    CMD_MASK = 0x3F
    STREAM_LOCAL = 0x80
    STREAM_EOF = 0x40
    FLAG_ERROR = 0x01
    FLAG_ASYNC = 0x02
    C_CMD_REQUEST = 1
    C_CMD_RESPONSE = 2
    C_CMD_NOTIFY = 3
    C_CMD_PING = 4
    C_CMD_PONG = 5
    C_CMD_STREAM = 6


cdef class Message:
    cdef readonly unsigned char cmd_byte
    cdef readonly unsigned char flags
    cdef readonly unsigned char coder_flags
    cdef readonly uint64_t seq
    cdef readonly str method
    cdef readonly bytes payload


cdef class FrameReader:
    cdef bytearray _tail
    cdef uint32_t _max_body_len
    cdef object _callback
    cdef tuple _coders
    cdef unsigned char _coder_mask
    cdef readonly Py_ssize_t dropped

    cdef Py_ssize_t _parse(self, const unsigned char* p, Py_ssize_t n, list out) except -1
    cdef int _deliver(self, const unsigned char* p, Py_ssize_t size, list out) except -1
    cdef int _emit(self, Message msg, list out) except -1

# cython: language_level=3
"""C-level WebSocket frame helpers shared by ``_frames.pyx`` and ``_protocol.pyx``.

The hot loops (masking, UTF-8 validation) are plain C inlined into every module
that cimports this file, so they cost no Python call.
"""

from libc.stdint cimport uint8_t, uint32_t, uint64_t

cdef extern from *:
    """
    #include <string.h>
    #include <stdint.h>

    #if defined(__GNUC__) && defined(__x86_64__) && !defined(__clang__)
    #define NBIO_WS_AVX2 1
    typedef unsigned char nbio_v32 __attribute__((vector_size(32)));
    /* 64 bytes per round with AVX2 (checked at run time); returns the bytes done. */
    __attribute__((target("avx2"))) static Py_ssize_t nbio_ws_mask_avx2(
            unsigned char *dst, const unsigned char *src, Py_ssize_t n,
            const unsigned char *pat8) {
        unsigned char pat[32];
        nbio_v32 k, a, b;
        Py_ssize_t i = 0;
        int j;
        for (j = 0; j < 32; j += 8) memcpy(pat + j, pat8, 8);
        memcpy(&k, pat, 32);
        for (; i + 64 <= n; i += 64) {
            memcpy(&a, src + i, 32); memcpy(&b, src + i + 32, 32);
            a ^= k; b ^= k;
            memcpy(dst + i, &a, 32); memcpy(dst + i + 32, &b, 32);
        }
        return i;
    }
    static int nbio_ws_avx2 = -1;
    #endif

    /* XOR ``n`` bytes of ``src`` with the 4-byte ``key`` starting at key
       offset ``off`` (0..3) into ``dst`` (may equal ``src``), 8 bytes at a time
       (64 with AVX2 for long payloads). */
    static inline void nbio_ws_mask(unsigned char *dst, const unsigned char *src,
                                    Py_ssize_t n, const unsigned char *key,
                                    unsigned int off) {
        unsigned char pat[8];
        uint64_t k8, w;
        Py_ssize_t i = 0;
        int j;
        for (j = 0; j < 8; j++) pat[j] = key[(off + (unsigned)j) & 3u];
        memcpy(&k8, pat, 8);
    #ifdef NBIO_WS_AVX2
        if (n >= 256) {
            if (nbio_ws_avx2 < 0) {
                __builtin_cpu_init();
                nbio_ws_avx2 = __builtin_cpu_supports("avx2") ? 1 : 0;
            }
            if (nbio_ws_avx2) i = nbio_ws_mask_avx2(dst, src, n, pat);
        }
    #endif
        for (; i + 32 <= n; i += 32) {
            uint64_t a, b, c, d;
            memcpy(&a, src + i, 8); memcpy(&b, src + i + 8, 8);
            memcpy(&c, src + i + 16, 8); memcpy(&d, src + i + 24, 8);
            a ^= k8; b ^= k8; c ^= k8; d ^= k8;
            memcpy(dst + i, &a, 8); memcpy(dst + i + 8, &b, 8);
            memcpy(dst + i + 16, &c, 8); memcpy(dst + i + 24, &d, 8);
        }
        for (; i + 8 <= n; i += 8) {
            memcpy(&w, src + i, 8);
            w ^= k8;
            memcpy(dst + i, &w, 8);
        }
        for (; i < n; i++) dst[i] = src[i] ^ pat[i & 7];
    }

    /* Incremental UTF-8 validation (RFC 3629: no overlongs, no surrogates, <= U+10FFFF).
       ``state`` is 0 between code points, else packs the continuation bytes still
       needed (bits 0-7) and the allowed range of the next byte (lo: bits 8-15,
       hi: bits 16-23).  Returns the new state, or NBIO_UTF8_REJECT as soon as an
       invalid byte is seen (fail fast, mid-sequence included). */
    #define NBIO_UTF8_REJECT 0xFFFFFFFFu
    static inline uint32_t nbio_utf8_feed(uint32_t state, const unsigned char *s,
                                          Py_ssize_t n) {
        Py_ssize_t i = 0;
        unsigned int need = state & 0xffu, lo = (state >> 8) & 0xffu, hi = (state >> 16) & 0xffu;
        unsigned int c;
        while (i < n) {
            if (need == 0) {
                while (i + 8 <= n) {
                    uint64_t w;
                    memcpy(&w, s + i, 8);
                    if (w & 0x8080808080808080ULL) break;
                    i += 8;
                }
                if (i >= n) break;
                c = s[i++];
                if (c < 0x80u) continue;
                if (c < 0xC2u) return NBIO_UTF8_REJECT;
                if (c < 0xE0u) { need = 1; lo = 0x80u; hi = 0xBFu; }
                else if (c < 0xF0u) {
                    need = 2;
                    lo = (c == 0xE0u) ? 0xA0u : 0x80u;
                    hi = (c == 0xEDu) ? 0x9Fu : 0xBFu;
                } else if (c < 0xF5u) {
                    need = 3;
                    lo = (c == 0xF0u) ? 0x90u : 0x80u;
                    hi = (c == 0xF4u) ? 0x8Fu : 0xBFu;
                } else return NBIO_UTF8_REJECT;
            } else {
                c = s[i++];
                if (c < lo || c > hi) return NBIO_UTF8_REJECT;
                need--; lo = 0x80u; hi = 0xBFu;
            }
        }
        return need ? (need | (lo << 8) | (hi << 16)) : 0u;
    }

    /* Write a frame header into ``out`` (>= 14 bytes); returns its length. */
    static inline Py_ssize_t nbio_ws_header(unsigned char *out, unsigned int opcode, int fin,
                                            int rsv1, const unsigned char *key, uint64_t n) {
        Py_ssize_t h = 2;
        out[0] = (unsigned char)((fin ? 0x80u : 0u) | (rsv1 ? 0x40u : 0u) | (opcode & 0x0Fu));
        if (n < 126) {
            out[1] = (unsigned char)n;
        } else if (n <= 0xFFFFu) {
            out[1] = 126;
            out[2] = (unsigned char)(n >> 8); out[3] = (unsigned char)n;
            h = 4;
        } else {
            int j;
            out[1] = 127;
            for (j = 0; j < 8; j++) out[2 + j] = (unsigned char)(n >> (56 - 8 * j));
            h = 10;
        }
        if (key != NULL) {
            out[1] |= 0x80u;
            memcpy(out + h, key, 4);
            h += 4;
        }
        return h;
    }
    """
    uint32_t NBIO_UTF8_REJECT
    void nbio_ws_mask(unsigned char *dst, const unsigned char *src, Py_ssize_t n,
                      const unsigned char *key, unsigned int off) nogil
    uint32_t nbio_utf8_feed(uint32_t state, const unsigned char *s, Py_ssize_t n) nogil
    Py_ssize_t nbio_ws_header(unsigned char *out, unsigned int opcode, int fin, int rsv1,
                              const unsigned char *key, uint64_t n) nogil

# Fill ``key`` with 4 fresh random bytes (os.urandom, drawn 4 KiB at a time).
cdef int fill_mask_key(unsigned char *key) except -1

# Build one or more frames for a message payload (fragmented at ``max_frame`` bytes when
# > 0); ``mask`` draws a fresh random key per frame.  Continuation frames get opcode 0.
cdef bytes build_frames(unsigned int opcode, const unsigned char *p, Py_ssize_t n,
                        bint rsv1, bint mask, Py_ssize_t max_frame)

# Returns 0 when ``code`` may appear in a Close frame on the wire, else -1.
cdef int check_close_code(int code) noexcept

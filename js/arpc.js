// arpc.js - browser (and Node) RPC client for nbio.rpc, wire-compatible with Go arpc.
//
// An ES module with no dependencies and no build step:
//
//   import { ArpcClient } from "./arpc.js";
//   const client = new ArpcClient("ws://" + location.host + "/rpc");
//   await client.connect();
//   const answer = await client.call("/echo", "hello", { timeout: 5000 });
//   client.handle("/chat/message", (ctx) => show(ctx.value));   // server -> browser
//
// Every arpc frame travels as one binary WebSocket message. A frame is a 16-byte
// little-endian header (body length u32; coder flags; command; flags; method length;
// seq u64), then the method, then the payload. Payload rule (as arpc): strings travel as
// raw UTF-8, Uint8Array/ArrayBuffer raw, null/undefined as an empty payload, anything else
// through the codec (JSON by default). See docs/rpc_browser.md.

export const CMD_REQUEST = 1;
export const CMD_RESPONSE = 2;
export const CMD_NOTIFY = 3;
export const CMD_PING = 4;
export const CMD_PONG = 5;
export const CMD_STREAM = 6;
export const CMD_MASK = 0x3f;
export const STREAM_LOCAL = 0x80; // frame from the side that created the stream
export const STREAM_EOF = 0x40; // sender's last frame
export const FLAG_ERROR = 0x01;
export const FLAG_ASYNC = 0x02;
export const HEADER_SIZE = 16;
export const MAX_METHOD_LEN = 127;
export const FIRST_SEQ = 2;
export const ERR_METHOD_NOT_FOUND = "method not found";

const encoder = new TextEncoder();
const decoder = new TextDecoder("utf-8");

// -- errors ------------------------------------------------------------------------------------

/** The remote side answered with an error (message = its text). */
export class RpcError extends Error {
  constructor(message) {
    super(message);
    this.name = "RpcError";
  }
}

/** No answer within the call's timeout. */
export class RpcTimeout extends RpcError {
  constructor(message) {
    super(message);
    this.name = "RpcTimeout";
  }
}

/** The connection dropped while the call was pending. */
export class ConnectionLost extends Error {
  constructor(message) {
    super(message);
    this.name = "ConnectionLost";
  }
}

/** The client is not connected (closed, still connecting, or reconnecting). */
export class NotConnected extends ConnectionLost {
  constructor(message) {
    super(message);
    this.name = "NotConnected";
  }
}

/** A stream ended: the peer sent its last frame. */
export class StreamEnded extends Error {
  constructor(message) {
    super(message);
    this.name = "StreamEnded";
  }
}

/** Malformed input (the connection is closed). */
export class ProtocolError extends Error {
  constructor(message) {
    super(message);
    this.name = "ProtocolError";
  }
}

// -- codec and payloads ---------------------------------------------------------------------

/** The default codec: compact JSON in UTF-8. */
export const JsonCodec = {
  marshal(value) {
    return encoder.encode(JSON.stringify(value));
  },
  unmarshal(bytes) {
    return JSON.parse(decoder.decode(bytes));
  },
};

/** A value as payload bytes (arpc's rule; see the module comment). */
export function toPayload(value, codec = JsonCodec) {
  if (value === undefined || value === null) return new Uint8Array(0);
  if (typeof value === "string") return encoder.encode(value);
  if (value instanceof Uint8Array) return value;
  if (value instanceof ArrayBuffer) return new Uint8Array(value);
  if (ArrayBuffer.isView(value)) {
    return new Uint8Array(value.buffer, value.byteOffset, value.byteLength);
  }
  return codec.marshal(value);
}

/**
 * Payload bytes as a value. `as`: "bytes" (Uint8Array), "string" (UTF-8 text), "json"
 * (through the codec; empty gives null) or "auto" (default: through the codec, and the
 * text itself when it is not valid for the codec - a raw string answer - as arpc's client).
 */
export function fromPayload(bytes, codec = JsonCodec, as = "auto") {
  if (as === "bytes") return bytes;
  if (as === "string") return decoder.decode(bytes);
  if (bytes.length === 0) return null;
  if (as === "json") return codec.unmarshal(bytes);
  try {
    return codec.unmarshal(bytes);
  } catch (e) {
    return decoder.decode(bytes);
  }
}

// -- frames ---------------------------------------------------------------------------------

const methodCache = new Map();

function methodBytes(method) {
  let mb = methodCache.get(method);
  if (mb === undefined) {
    mb = encoder.encode(method);
    if (mb.length > MAX_METHOD_LEN) {
      throw new RangeError(`invalid method length: ${mb.length}, should <= ${MAX_METHOD_LEN}`);
    }
    if (methodCache.size < 1024) methodCache.set(method, mb);
  }
  return mb;
}

/** Build one frame (`cmd` is the whole command byte, stream bits included). */
export function encodeFrame(cmd, method, seq, payload = new Uint8Array(0), flags = 0) {
  const mb = method ? methodBytes(method) : new Uint8Array(0);
  const bodyLen = mb.length + payload.length;
  const frame = new Uint8Array(HEADER_SIZE + bodyLen);
  const view = new DataView(frame.buffer);
  view.setUint32(0, bodyLen, true);
  frame[5] = cmd;
  frame[6] = flags;
  frame[7] = mb.length;
  view.setUint32(8, seq % 0x100000000, true);
  view.setUint32(12, Math.floor(seq / 0x100000000), true);
  frame.set(mb, HEADER_SIZE);
  frame.set(payload, HEADER_SIZE + mb.length);
  return frame;
}

/** Parse one whole frame (a Uint8Array holding exactly it). */
export function parseFrame(frame) {
  if (frame.length < HEADER_SIZE) throw new ProtocolError("truncated frame");
  const view = new DataView(frame.buffer, frame.byteOffset, frame.byteLength);
  const bodyLen = view.getUint32(0, true);
  if (frame.length !== HEADER_SIZE + bodyLen) throw new ProtocolError("bad frame length");
  const cmdByte = frame[5];
  const cmd = cmdByte & CMD_MASK;
  if (cmd < CMD_REQUEST || cmd > CMD_STREAM) throw new ProtocolError(`invalid cmd [${cmd}]`);
  let methodLen = frame[7];
  if (cmd === CMD_PING || cmd === CMD_PONG) methodLen = Math.min(methodLen, bodyLen);
  else if (methodLen === 0 || methodLen > MAX_METHOD_LEN || methodLen > bodyLen) {
    return null; // dropped, as arpc does
  }
  const seq = view.getUint32(8, true) + view.getUint32(12, true) * 0x100000000;
  const method = decoder.decode(frame.subarray(HEADER_SIZE, HEADER_SIZE + methodLen));
  return {
    cmd,
    cmdByte,
    coder: frame[4],
    flags: frame[6],
    seq,
    method,
    payload: frame.subarray(HEADER_SIZE + methodLen),
  };
}

/**
 * Splits a byte stream into frames: a message may hold several frames, or part of one.
 * `feed(bytes)` returns the complete frames (Uint8Array each).
 */
export class FrameReader {
  constructor(maxBodyLen = 64 * 1024 * 1024 - 16) {
    this.maxBodyLen = maxBodyLen;
    this.tail = null;
  }

  feed(bytes) {
    let data = bytes;
    if (this.tail) {
      data = new Uint8Array(this.tail.length + bytes.length);
      data.set(this.tail);
      data.set(bytes, this.tail.length);
      this.tail = null;
    }
    const frames = [];
    let off = 0;
    while (data.length - off >= HEADER_SIZE) {
      const bodyLen = new DataView(data.buffer, data.byteOffset + off, 4).getUint32(0, true);
      if (bodyLen > this.maxBodyLen) {
        throw new ProtocolError(`body length ${bodyLen} over the limit ${this.maxBodyLen}`);
      }
      const end = off + HEADER_SIZE + bodyLen;
      if (end > data.length) break;
      frames.push(data.subarray(off, end));
      off = end;
    }
    if (off < data.length) this.tail = data.slice(off);
    return frames;
  }
}

// -- handler context -------------------------------------------------------------------------

/** What a handler gets for a call or notify from the server. */
export class Context {
  constructor(client, msg) {
    this.client = client;
    this.method = msg.method;
    this.seq = msg.seq;
    this.body = msg.payload;
    this.message = msg;
    this.isRequest = msg.cmd === CMD_REQUEST;
    this.answered = !this.isRequest;
  }

  /** The request value (`as`: "auto", "json", "string", "bytes"). */
  bind(as = "auto") {
    return fromPayload(this.body, this.client.codec, as);
  }

  get value() {
    return this.bind();
  }

  /** Answer the request with `value`. */
  write(value) {
    this._answer(toPayload(value, this.client.codec), 0);
  }

  /** Answer the request with an error text. */
  error(text) {
    this._answer(encoder.encode(String(text)), FLAG_ERROR);
  }

  _answer(payload, errorFlag) {
    if (this.answered) return;
    this.answered = true;
    const flags = errorFlag | (this.message.flags & FLAG_ASYNC);
    this.client._send(encodeFrame(CMD_RESPONSE, this.method, this.seq, payload, flags));
  }
}

// -- streams --------------------------------------------------------------------------------

/** A stream: ordered values both ways under one id (arpc Stream). */
export class Stream {
  constructor(client, method, id, local) {
    this.client = client;
    this.method = method;
    this.id = id;
    this.local = local; // true on the side that created it
    this.as = "auto";
    this.queue = [];
    this.waiters = [];
    this.recvClosed = false;
    this.sendClosed = false;
    this.error = null;
  }

  _frame(payload, eof) {
    const cmd = CMD_STREAM | (this.local ? STREAM_LOCAL : 0) | (eof ? STREAM_EOF : 0);
    return encodeFrame(cmd, this.method, this.id, payload);
  }

  /** Send one value (`eof`: as the last one). */
  send(value, eof = false) {
    if (this.error) throw this.error;
    if (this.sendClosed) throw new Error(`stream ${this.method} is closed for sending`);
    const payload = toPayload(value, this.client.codec);
    if (eof) this.sendClosed = true;
    this.client._send(this._frame(payload, eof));
    this._maybeForget();
  }

  /** Tell the peer this side sends no more (an empty frame with the EOF bit). */
  closeSend() {
    if (this.sendClosed || this.error) return;
    this.sendClosed = true;
    try {
      this.client._send(this._frame(new Uint8Array(0), true));
    } finally {
      this._maybeForget();
    }
  }

  /** The next value; rejects with StreamEnded after the peer's last frame. */
  recv(as) {
    if (this.queue.length) {
      return Promise.resolve(fromPayload(this.queue.shift(), this.client.codec, as || this.as));
    }
    if (this.error) return Promise.reject(this.error);
    if (this.recvClosed) {
      return Promise.reject(new StreamEnded(`stream ${this.method} id=${this.id} ended`));
    }
    return new Promise((resolve, reject) => {
      this.waiters.push({ resolve, reject, as });
    });
  }

  async *[Symbol.asyncIterator]() {
    for (;;) {
      try {
        yield await this.recv();
      } catch (e) {
        if (e instanceof StreamEnded) return;
        throw e;
      }
    }
  }

  _onFrame(msg) {
    if (msg.payload.length && !this.recvClosed) {
      const w = this.waiters.shift();
      if (w) w.resolve(fromPayload(msg.payload, this.client.codec, w.as || this.as));
      else this.queue.push(msg.payload.slice());
    }
    if (msg.cmdByte & STREAM_EOF) {
      this.recvClosed = true;
      this._flushWaiters(new StreamEnded(`stream ${this.method} id=${this.id} ended`));
      this._maybeForget();
    }
  }

  _lost(err) {
    this.error = err;
    this.recvClosed = true;
    this.sendClosed = true;
    this._flushWaiters(err);
  }

  _flushWaiters(err) {
    const waiters = this.waiters;
    this.waiters = [];
    for (const w of waiters) w.reject(err);
  }

  _maybeForget() {
    if (this.recvClosed && this.sendClosed) this.client._forgetStream(this);
  }
}

// -- the client -----------------------------------------------------------------------------

const CONNECTING = "connecting";
const OPEN = "open";
const RECONNECTING = "reconnecting";
const CLOSED = "closed";

function nowMs() {
  return typeof performance !== "undefined" ? performance.now() : Date.now();
}

/**
 * An RPC client over WebSocket.
 *
 * Options: `WebSocket` (the constructor to use; default: the browser's), `codec`
 * (`{marshal, unmarshal}`, JSON by default), `timeout` (default call timeout in ms, 30000;
 * 0: none), `keepalive` (ping every so many ms; the connection is dropped when nothing
 * arrives for twice that), `reconnect` (default true), `reconnectInterval` (ms, 1000),
 * `maxReconnectAttempts` (default: no limit), `protocols` (WebSocket subprotocols),
 * `httpUrl` (for callHttp/notifyHttp), `logger` (default console), hooks `onOpen(client)`,
 * `onClose(client, event)`, `onReconnect(client)`, `onError(client, event)`.
 */
export class ArpcClient {
  constructor(url, options = {}) {
    this.url = url;
    this.options = options;
    this.WebSocket = options.WebSocket || globalThis.WebSocket;
    if (!this.WebSocket) {
      throw new Error("no WebSocket implementation: pass options.WebSocket");
    }
    this.codec = options.codec || JsonCodec;
    this.timeout = options.timeout === undefined ? 30000 : options.timeout;
    this.reconnect = options.reconnect !== false;
    this.reconnectInterval = options.reconnectInterval || 1000;
    this.maxReconnectAttempts = options.maxReconnectAttempts ?? null;
    this.httpUrl = options.httpUrl || null;
    this.logger = options.logger || console;
    this.onOpen = options.onOpen || null;
    this.onClose = options.onClose || null;
    this.onReconnect = options.onReconnect || null;
    this.onError = options.onError || null;
    this.handlers = new Map();
    this.streamHandlers = new Map();
    this.state = CLOSED;
    this.ws = null;
    this.seq = FIRST_SEQ;
    this.pending = new Map(); // seq -> {resolve, reject, timer, as, method}
    this.localStreams = new Map();
    this.remoteStreams = new Map();
    this.reader = new FrameReader();
    this.reconnects = 0;
    this._attempts = 0;
    this._opened = null; // {resolve, reject} of connect()
    this._reconnectTimer = null;
    this._keepaliveTimer = null;
    this._lastReceived = 0;
    if (options.keepalive) this.keepalive(options.keepalive);
  }

  // -- connection ---------------------------------------------------------------------------

  /** Open the connection; resolves with the client once open. */
  connect() {
    if (this.state === OPEN) return Promise.resolve(this);
    return new Promise((resolve, reject) => {
      this._opened = { resolve, reject };
      this._attempts = 0;
      this._dial(CONNECTING);
    });
  }

  get connected() {
    return this.state === OPEN;
  }

  _dial(state) {
    this.state = state;
    let ws;
    try {
      ws = this.options.protocols
        ? new this.WebSocket(this.url, this.options.protocols)
        : new this.WebSocket(this.url);
    } catch (e) {
      this.ws = null;
      setTimeout(() => this._onClose({ code: 1006, reason: e.message }), 0);
      return;
    }
    ws.binaryType = "arraybuffer";
    this.ws = ws;
    ws.onopen = () => {
      if (this.ws !== ws) return;
      const again = state === RECONNECTING;
      this.state = OPEN;
      this._attempts = 0;
      this.reader = new FrameReader();
      this._lastReceived = nowMs();
      if (this._opened) {
        this._opened.resolve(this);
        this._opened = null;
      }
      if (again) this.reconnects++;
      this._hook(this.onOpen);
      if (again) this._hook(this.onReconnect);
    };
    ws.onmessage = (event) => {
      if (this.ws === ws) this._onMessage(event.data);
    };
    ws.onerror = (event) => {
      if (this.ws === ws) this._hook(this.onError, event);
    };
    ws.onclose = (event) => {
      if (this.ws === ws) this._onClose(event);
    };
  }

  _hook(fn, arg) {
    if (!fn) return;
    try {
      const r = fn(this, arg);
      if (r && typeof r.catch === "function") {
        r.catch((e) => this.logger.error("[arpc] hook failed:", e));
      }
    } catch (e) {
      this.logger.error("[arpc] hook failed:", e);
    }
  }

  _onClose(event) {
    const wasOpen = this.state === OPEN;
    this.ws = null;
    const reason = event && event.code ? ` (${event.code}${event.reason ? " " + event.reason : ""})` : "";
    this._failAll(new ConnectionLost("connection lost" + reason));
    if (wasOpen) this._hook(this.onClose, event);
    if (this.state === CLOSED) return;
    const limit = this.maxReconnectAttempts;
    // the first connection must succeed (connect() rejects); after that, reconnect
    const firstDial = this.state === CONNECTING;
    if (firstDial || !this.reconnect || (limit !== null && this._attempts >= limit)) {
      this.state = CLOSED;
      if (this._opened) {
        this._opened.reject(new NotConnected(`cannot connect to ${this.url}${reason}`));
        this._opened = null;
      }
      return;
    }
    this.state = RECONNECTING;
    this._attempts++;
    this._reconnectTimer = setTimeout(() => {
      this._reconnectTimer = null;
      if (this.state === RECONNECTING) this._dial(RECONNECTING);
    }, this.reconnectInterval);
  }

  _failAll(err) {
    const pending = this.pending;
    this.pending = new Map();
    for (const entry of pending.values()) {
      if (entry.timer) clearTimeout(entry.timer);
      entry.reject(err);
    }
    for (const streams of [this.localStreams, this.remoteStreams]) {
      for (const st of streams.values()) st._lost(err);
      streams.clear();
    }
  }

  /** Stop: close the connection, stop reconnecting and keepalive; pending calls fail. */
  close(code = 1000, reason = "") {
    this.state = CLOSED;
    if (this._reconnectTimer) clearTimeout(this._reconnectTimer);
    this._reconnectTimer = null;
    if (this._keepaliveTimer) clearInterval(this._keepaliveTimer);
    this._keepaliveTimer = null;
    const ws = this.ws;
    this.ws = null;
    this._failAll(new NotConnected("client is closed"));
    if (this._opened) {
      this._opened.reject(new NotConnected("client is closed"));
      this._opened = null;
    }
    if (ws) {
      try {
        ws.close(code, reason);
      } catch (e) {
        /* already closing */
      }
    }
  }

  /** Send a ping every `interval` ms; drop the connection (and reconnect) when nothing
   * arrived for twice that. */
  keepalive(interval = 30000) {
    if (this._keepaliveTimer) clearInterval(this._keepaliveTimer);
    this._keepaliveTimer = setInterval(() => {
      if (this.state !== OPEN) return;
      if (nowMs() - this._lastReceived > 2 * interval) {
        this.logger.warn("[arpc] keepalive: no answer, reconnecting");
        try {
          this.ws.close(4000, "keepalive timeout");
        } catch (e) {
          /* ignore */
        }
        return;
      }
      this.ping();
    }, interval);
    if (this._keepaliveTimer.unref) this._keepaliveTimer.unref();
  }

  // -- sending ------------------------------------------------------------------------------

  _notConnected() {
    if (this.state === RECONNECTING) return new NotConnected("client is reconnecting");
    if (this.state === CONNECTING) return new NotConnected("client is connecting");
    if (this.state === CLOSED) return new NotConnected("client is closed");
    return new NotConnected("client is not connected");
  }

  _send(frame) {
    if (this.state !== OPEN || !this.ws) throw this._notConnected();
    this.ws.send(frame);
  }

  _nextSeq() {
    const seq = this.seq;
    this.seq = seq >= Number.MAX_SAFE_INTEGER ? 1 : seq + 1;
    return seq;
  }

  /**
   * Call `method` with `value`; resolves with the answer or rejects with RpcError (the
   * remote error text), RpcTimeout, ConnectionLost or NotConnected. Options: `timeout`
   * (ms; default the client's), `as` ("auto", "json", "string", "bytes").
   */
  call(method, value, opts = {}) {
    let frame;
    const seq = this._nextSeq();
    try {
      if (this.state !== OPEN) throw this._notConnected();
      frame = encodeFrame(CMD_REQUEST, method, seq, toPayload(value, this.codec));
    } catch (e) {
      return Promise.reject(e);
    }
    return new Promise((resolve, reject) => {
      const entry = { resolve, reject, timer: null, as: opts.as || "auto", method };
      const timeout = opts.timeout === undefined ? this.timeout : opts.timeout;
      if (timeout > 0) {
        entry.timer = setTimeout(() => {
          if (this.pending.get(seq) === entry) {
            this.pending.delete(seq);
            reject(new RpcTimeout(`call ${JSON.stringify(method)} timed out after ${timeout} ms`));
          }
        }, timeout);
      }
      this.pending.set(seq, entry);
      try {
        this.ws.send(frame);
      } catch (e) {
        this.pending.delete(seq);
        if (entry.timer) clearTimeout(entry.timer);
        reject(e);
      }
    });
  }

  /** One-way message. Throws NotConnected when not connected. */
  notify(method, value) {
    this._send(encodeFrame(CMD_NOTIFY, method, this._nextSeq(), toPayload(value, this.codec), FLAG_ASYNC));
  }

  /** Send a ping (the server answers with a pong). */
  ping() {
    this._send(encodeFrame(CMD_PING, "", 0));
  }

  /** Handle calls and notifies from the server: `fn(ctx)`; for a call, the value returned
   * (or resolved) answers unless the handler answered with ctx.write/ctx.error; a thrown
   * error answers with its message. */
  handle(method, fn) {
    methodBytes(method);
    this.handlers.set(method, fn);
    return this;
  }

  /** Handle streams the server opens: `fn(stream)` (may be async). */
  handleStream(method, fn) {
    methodBytes(method);
    this.streamHandlers.set(method, fn);
    return this;
  }

  /** A new stream to the server's stream handler for `method`. */
  stream(method) {
    if (this.state !== OPEN) throw this._notConnected();
    const st = new Stream(this, method, this._nextSeq(), true);
    this.localStreams.set(st.id, st);
    return st;
  }

  _forgetStream(st) {
    const streams = st.local ? this.localStreams : this.remoteStreams;
    if (streams.get(st.id) === st) streams.delete(st.id);
  }

  // -- receiving ----------------------------------------------------------------------------

  _onMessage(data) {
    this._lastReceived = nowMs();
    let bytes;
    if (typeof data === "string") bytes = encoder.encode(data);
    else if (data instanceof ArrayBuffer) bytes = new Uint8Array(data);
    else if (ArrayBuffer.isView(data)) bytes = new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
    else {
      this.logger.warn("[arpc] unexpected message type dropped");
      return;
    }
    try {
      for (const frame of this.reader.feed(bytes)) {
        const msg = parseFrame(frame);
        if (msg !== null) this._dispatch(msg);
      }
    } catch (e) {
      if (e instanceof ProtocolError) {
        this.logger.error("[arpc] closing:", e.message);
        if (this.ws) this.ws.close(1002, "protocol error");
        return;
      }
      throw e;
    }
  }

  _dispatch(msg) {
    if (msg.coder !== 0) {
      this.logger.warn(`[arpc] frame with coder flags ${msg.coder} dropped (no coder here)`);
      return;
    }
    switch (msg.cmd) {
      case CMD_RESPONSE: {
        const entry = this.pending.get(msg.seq);
        if (!entry) return; // late (timed out) or unknown
        this.pending.delete(msg.seq);
        if (entry.timer) clearTimeout(entry.timer);
        if (msg.flags & FLAG_ERROR) {
          entry.reject(new RpcError(decoder.decode(msg.payload)));
          return;
        }
        let value;
        try {
          value = fromPayload(msg.payload, this.codec, entry.as);
        } catch (e) {
          entry.reject(new ProtocolError(`cannot decode the answer to ${entry.method}: ${e.message}`));
          return;
        }
        entry.resolve(value);
        return;
      }
      case CMD_REQUEST:
      case CMD_NOTIFY:
        this._handle(msg);
        return;
      case CMD_PING:
        this._send(encodeFrame(CMD_PONG, "", 0));
        return;
      case CMD_PONG:
        return;
      case CMD_STREAM:
        this._onStream(msg);
        return;
      default:
        return;
    }
  }

  _handle(msg) {
    const ctx = new Context(this, msg);
    const fn = this.handlers.get(msg.method);
    if (!fn) {
      if (ctx.isRequest) ctx.error(ERR_METHOD_NOT_FOUND);
      return;
    }
    const fail = (e) => {
      if (!ctx.isRequest) {
        this.logger.error(`[arpc] handler for ${msg.method} failed:`, e);
        return;
      }
      try {
        ctx.error(e instanceof Error ? e.message : String(e));
      } catch (e2) {
        /* the connection is gone */
      }
    };
    const done = (value) => {
      if (!ctx.answered) {
        try {
          ctx.write(value);
        } catch (e) {
          /* the connection is gone */
        }
      }
    };
    let result;
    try {
      result = fn(ctx);
    } catch (e) {
      fail(e);
      return;
    }
    if (result && typeof result.then === "function") result.then(done, fail);
    else done(result);
  }

  _onStream(msg) {
    let st;
    if (msg.cmdByte & STREAM_LOCAL) {
      // from the side that created it: the server; ours is the remote end
      st = this.remoteStreams.get(msg.seq);
      if (!st) {
        const fn = this.streamHandlers.get(msg.method);
        if (!fn) return;
        st = new Stream(this, msg.method, msg.seq, false);
        this.remoteStreams.set(msg.seq, st);
        st._onFrame(msg);
        Promise.resolve()
          .then(() => fn(st))
          .catch((e) => this.logger.error(`[arpc] stream handler for ${msg.method} failed:`, e))
          .finally(() => {
            if (!st.sendClosed && !st.error) {
              try {
                st.closeSend();
              } catch (e) {
                /* the connection is gone */
              }
            }
          });
        return;
      }
    } else {
      st = this.localStreams.get(msg.seq);
      if (!st) return;
    }
    st._onFrame(msg);
  }

  // -- HTTP-RPC (one frame per POST) --------------------------------------------------------

  /** Call over HTTP-RPC (POST of one frame to `opts.url` or the client's `httpUrl`). */
  callHttp(method, value, opts = {}) {
    return httpCall(opts.url || this.httpUrl, method, value, { codec: this.codec, ...opts });
  }

  /** Notify over HTTP-RPC. */
  notifyHttp(method, value, opts = {}) {
    return httpNotify(opts.url || this.httpUrl, method, value, { codec: this.codec, ...opts });
  }
}

let httpSeq = FIRST_SEQ;

async function postFrame(url, frame, timeout, fetchImpl) {
  const doFetch = fetchImpl || globalThis.fetch;
  if (!url) throw new Error("no HTTP-RPC URL");
  const controller = timeout > 0 ? new AbortController() : null;
  const timer = controller ? setTimeout(() => controller.abort(), timeout) : null;
  try {
    const resp = await doFetch(url, {
      method: "POST",
      body: frame,
      headers: { "content-type": "application/octet-stream" },
      signal: controller ? controller.signal : undefined,
    });
    return { status: resp.status, body: new Uint8Array(await resp.arrayBuffer()) };
  } catch (e) {
    if (controller && controller.signal.aborted) throw new RpcTimeout(`HTTP-RPC timed out after ${timeout} ms`);
    throw new ConnectionLost(`HTTP-RPC request failed: ${e.message}`);
  } finally {
    if (timer) clearTimeout(timer);
  }
}

/** Call `method` over HTTP-RPC at `url`. Options: `codec`, `timeout` (ms), `as`, `fetch`. */
export async function httpCall(url, method, value, opts = {}) {
  const codec = opts.codec || JsonCodec;
  const seq = httpSeq++;
  const frame = encodeFrame(CMD_REQUEST, method, seq, toPayload(value, codec));
  const { status, body } = await postFrame(url, frame, opts.timeout ?? 30000, opts.fetch);
  if (status === 204) throw new RpcError(`${method}: the server sent no answer`);
  if (status !== 200) throw new RpcError(`HTTP ${status}: ${decoder.decode(body).trim()}`);
  const msg = parseFrame(body);
  if (!msg || msg.cmd !== CMD_RESPONSE || msg.seq !== seq) throw new ProtocolError("unexpected answer");
  if (msg.flags & FLAG_ERROR) throw new RpcError(decoder.decode(msg.payload));
  return fromPayload(msg.payload, codec, opts.as || "auto");
}

/** Notify `method` over HTTP-RPC at `url`. */
export async function httpNotify(url, method, value, opts = {}) {
  const codec = opts.codec || JsonCodec;
  const frame = encodeFrame(CMD_NOTIFY, method, httpSeq++, toPayload(value, codec), FLAG_ASYNC);
  const { status, body } = await postFrame(url, frame, opts.timeout ?? 30000, opts.fetch);
  if (status !== 200) throw new RpcError(`HTTP ${status}: ${decoder.decode(body).trim()}`);
}

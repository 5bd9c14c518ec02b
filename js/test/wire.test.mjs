// Wire format of the JS client: golden vectors shared with the Python tests, framing,
// payload rules. No server needed.
import { test } from "node:test";
import assert from "node:assert/strict";
import {
  CMD_NOTIFY,
  CMD_PING,
  CMD_REQUEST,
  CMD_RESPONSE,
  CMD_STREAM,
  FLAG_ASYNC,
  FrameReader,
  ProtocolError,
  STREAM_EOF,
  STREAM_LOCAL,
  encodeFrame,
  fromPayload,
  parseFrame,
  toPayload,
} from "../arpc.js";

const hex = (u8) => Buffer.from(u8).toString("hex");
const unhex = (s) => new Uint8Array(Buffer.from(s.replace(/ /g, ""), "hex"));

const GOLDEN_CALL = "0a000000 00 01 00 05 0200000000000000 2f6563686f 68656c6c6f";
const GOLDEN_ANSWER = "0a000000 00 02 00 05 0200000000000000 2f6563686f 68656c6c6f";

test("golden call /echo hello", () => {
  assert.equal(hex(encodeFrame(CMD_REQUEST, "/echo", 2, toPayload("hello"))), GOLDEN_CALL.replace(/ /g, ""));
});

test("golden answer parses", () => {
  const msg = parseFrame(unhex(GOLDEN_ANSWER));
  assert.equal(msg.cmd, CMD_RESPONSE);
  assert.equal(msg.seq, 2);
  assert.equal(msg.method, "/echo");
  assert.equal(fromPayload(msg.payload, undefined, "string"), "hello");
});

test("ping frame has no method and seq 0", () => {
  assert.equal(hex(encodeFrame(CMD_PING, "", 0)), "00000000000400000000000000000000");
});

test("notify carries the async flag; seq above 32 bits round-trips", () => {
  const seq = 2 ** 40 + 7;
  const f = encodeFrame(CMD_NOTIFY, "/n", seq, toPayload({ a: 1 }), FLAG_ASYNC);
  const msg = parseFrame(f);
  assert.equal(msg.seq, seq);
  assert.equal(msg.flags, FLAG_ASYNC);
  assert.deepEqual(fromPayload(msg.payload), { a: 1 });
  assert.equal(hex(f.subarray(8, 16)), "0700000000010000");
});

test("stream bits travel in the command byte", () => {
  const f = encodeFrame(CMD_STREAM | STREAM_LOCAL | STREAM_EOF, "/s", 9);
  const msg = parseFrame(f);
  assert.equal(msg.cmd, CMD_STREAM);
  assert.equal(msg.cmdByte, 0xc6);
});

test("payload rules: raw strings and bytes, JSON for the rest, empty for null", () => {
  assert.equal(hex(toPayload("hé")), "68c3a9");
  assert.equal(hex(toPayload(new Uint8Array([1, 2]))), "0102");
  assert.equal(hex(toPayload(new Uint16Array([1]))), "0100");
  assert.equal(new TextDecoder().decode(toPayload({ a: [1, "x"] })), '{"a":[1,"x"]}');
  assert.equal(toPayload(null).length, 0);
  assert.equal(toPayload(undefined).length, 0);
  assert.equal(fromPayload(new Uint8Array(0)), null);
  assert.equal(fromPayload(toPayload("plain text")), "plain text"); // not JSON: the text
  assert.equal(fromPayload(toPayload("42")), 42); // arpc's ambiguity, as its JS client
  assert.equal(fromPayload(toPayload("42"), undefined, "string"), "42");
  assert.throws(() => fromPayload(toPayload("nope"), undefined, "json"), SyntaxError);
});

test("a method over 127 bytes is refused", () => {
  assert.throws(() => encodeFrame(CMD_REQUEST, "/" + "x".repeat(127), 2), RangeError);
});

test("invalid frames: unknown command throws, bad method length is dropped", () => {
  const bad = unhex(GOLDEN_CALL);
  bad[5] = 0x3f;
  assert.throws(() => parseFrame(bad), ProtocolError);
  const dropped = unhex(GOLDEN_CALL);
  dropped[7] = 0;
  assert.equal(parseFrame(dropped), null);
  assert.throws(() => parseFrame(unhex(GOLDEN_CALL).subarray(0, 20)), ProtocolError);
});

test("FrameReader: several frames in one message, one frame over several", () => {
  const a = unhex(GOLDEN_CALL);
  const b = encodeFrame(CMD_PING, "", 0);
  const both = new Uint8Array(a.length + b.length);
  both.set(a);
  both.set(b, a.length);
  const r = new FrameReader();
  assert.deepEqual(r.feed(both).map(hex), [hex(a), hex(b)]);
  assert.deepEqual(r.feed(a.subarray(0, 3)), []);
  assert.deepEqual(r.feed(a.subarray(3, 20)), []);
  assert.deepEqual(r.feed(a.subarray(20)).map(hex), [hex(a)]);
  assert.throws(() => new FrameReader(9).feed(a), ProtocolError);
});

// The JS client against the real Python server (js/test/server.py, started here).
import { after, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import WebSocket from "ws";
import {
  ArpcClient,
  CMD_PING,
  CMD_PONG,
  ConnectionLost,
  NotConnected,
  RpcError,
  RpcTimeout,
  httpCall,
  httpNotify,
} from "../arpc.js";
import { deferred, makeClient, startServer } from "./helpers.mjs";

let server;

before(async () => {
  server = await startServer();
});

after(async () => {
  await server.stop();
});

async function withClient(options, fn) {
  const client = makeClient(server.url, options);
  await client.connect();
  try {
    return await fn(client);
  } finally {
    client.close();
  }
}

describe("calls", () => {
  test("echo, JSON values, async handlers, concurrency", () =>
    withClient({}, async (c) => {
      assert.equal(await c.call("/echo", "hello", { as: "string" }), "hello");
      const bytes = await c.call("/echo", new Uint8Array([0, 255, 7]), { as: "bytes" });
      assert.deepEqual([...bytes], [0, 255, 7]);
      assert.deepEqual(await c.call("/json", { a: [1, null, "é"] }), { a: [1, null, "é"] });
      assert.equal(await c.call("/add", [2, 3]), 5);
      assert.equal(await c.call("/aadd", [20, 22]), 42);
      const many = await Promise.all(Array.from({ length: 500 }, (_, i) => c.call("/aadd", [i, i])));
      assert.deepEqual(many, Array.from({ length: 500 }, (_, i) => 2 * i));
    }));

  test("remote errors, unknown methods and timeouts are typed", () =>
    withClient({}, async (c) => {
      await assert.rejects(c.call("/fail", "x"), (e) => e instanceof RpcError && e.message === "it failed: x");
      await assert.rejects(c.call("/missing"), (e) => e instanceof RpcError && e.message === "method not found");
      await assert.rejects(c.call("/never", null, { timeout: 30 }), RpcTimeout);
      assert.equal(c.pending.size, 0);
      assert.equal(await c.call("/add", [1, 1]), 2); // still usable
    }));

  test("notify reaches the server", () =>
    withClient({}, async (c) => {
      c.notify("/notes", { n: 1 });
      c.notify("/notes", { n: 2 });
      // calls are answered in order after the notifies on one connection
      const seen = await c.call("/notes_seen");
      assert.deepEqual(seen.slice(-2), [{ n: 1 }, { n: 2 }]);
    }));
});

describe("server to browser", () => {
  test("the server calls a handler: sync, async, ctx.write, errors, unknown", () =>
    withClient({}, async (c) => {
      c.handle("/hello", (ctx) => "hello " + ctx.bind("string"));
      c.handle("/later", async (ctx) => ({ doubled: ctx.value * 2 }));
      c.handle("/explicit", (ctx) => {
        ctx.write([1, 2]);
        return "ignored";
      });
      c.handle("/oops", () => {
        throw new Error("browser says no");
      });
      assert.deepEqual(await c.call("/callback", ["/hello", "server"]), { ok: "hello server" });
      assert.deepEqual(await c.call("/callback", ["/later", 21]), { ok: { doubled: 42 } });
      assert.deepEqual(await c.call("/callback", ["/explicit", null]), { ok: [1, 2] });
      assert.deepEqual(await c.call("/callback", ["/oops", null]), { error: "browser says no" });
      assert.deepEqual(await c.call("/callback", ["/unknown", null]), { error: "method not found" });
    }));

  test("notifies and broadcasts from the server", async () => {
    const a = makeClient(server.url);
    const b = makeClient(server.url);
    await Promise.all([a.connect(), b.connect()]);
    try {
      const note = deferred();
      a.handle("/note", (ctx) => note.resolve(ctx.value));
      assert.equal(await a.call("/notify_me", ["/note", { x: 1 }]), "sent");
      assert.deepEqual(await note.promise, { x: 1 });
      const gotA = deferred();
      const gotB = deferred();
      a.handle("/news", (ctx) => gotA.resolve(ctx.value));
      b.handle("/news", (ctx) => gotB.resolve(ctx.value));
      assert.ok((await a.call("/broadcast", ["/news", "extra"])) >= 2);
      assert.deepEqual(await Promise.all([gotA.promise, gotB.promise]), ["extra", "extra"]);
    } finally {
      a.close();
      b.close();
    }
  });
});

describe("streams", () => {
  test("a stream opened by the browser", () =>
    withClient({}, async (c) => {
      const st = c.stream("/upper");
      st.as = "string";
      for (const w of ["a", "b", "c"]) st.send(w);
      st.closeSend();
      const got = [];
      for await (const v of st) got.push(v);
      assert.deepEqual(got, ["A", "B", "C"]);
      assert.equal(c.localStreams.size, 0);
    }));

  test("a stream opened by the server", () =>
    withClient({}, async (c) => {
      c.handleStream("/double", async (st) => {
        for await (const v of st) st.send(v * 2);
      });
      assert.deepEqual(await c.call("/open_stream", 4), [2, 4, 6, 8]);
    }));
});

describe("connection", () => {
  test("keepalive pings are sent and answered", () =>
    withClient({ keepalive: 20 }, async (c) => {
      const sentPing = deferred();
      const gotPong = deferred();
      const send = c.ws.send.bind(c.ws);
      c.ws.send = (frame) => {
        if (frame[5] === CMD_PING) sentPing.resolve();
        return send(frame);
      };
      const dispatch = c._dispatch.bind(c);
      c._dispatch = (msg) => {
        if (msg.cmd === CMD_PONG) gotPong.resolve();
        return dispatch(msg);
      };
      await sentPing.promise;
      await gotPong.promise;
      assert.equal(c.connected, true);
    }));

  test("pending calls fail at once when the connection drops; reconnect", async () => {
    const reconnected = deferred();
    const closed = deferred();
    const c = makeClient(server.url, {
      reconnectInterval: 20,
      onReconnect: () => reconnected.resolve(),
      onClose: () => closed.resolve(),
    });
    await c.connect();
    try {
      const pending = c.call("/never", null, { timeout: 0 });
      c.notify("/drop");
      await assert.rejects(pending, ConnectionLost);
      await closed.promise;
      await assert.rejects(c.call("/add", [1, 2]), (e) => e instanceof NotConnected && /reconnecting/.test(e.message));
      assert.throws(() => c.notify("/notes", 1), NotConnected);
      await reconnected.promise;
      assert.equal(c.reconnects, 1);
      assert.equal(await c.call("/add", [1, 2]), 3);
    } finally {
      c.close();
    }
  });

  test("malformed input from the server closes the connection", async () => {
    const closed = deferred();
    const c = makeClient(server.url, { reconnect: false, onClose: (_c, ev) => closed.resolve(ev) });
    await c.connect();
    const pending = c.call("/never", null, { timeout: 0 });
    c.notify("/garbage");
    await assert.rejects(pending, ConnectionLost);
    await closed.promise;
    assert.equal(c.state, "closed");
  });

  test("close() fails pending calls and stops", async () => {
    const c = makeClient(server.url);
    await c.connect();
    const pending = c.call("/never", null, { timeout: 0 });
    c.close();
    await assert.rejects(pending, NotConnected);
    await assert.rejects(c.call("/add", [1, 1]), NotConnected);
  });

  test("connect() rejects when the server is not there", async () => {
    const c = makeClient("ws://127.0.0.1:1/rpc");
    await assert.rejects(c.connect(), NotConnected);
    assert.equal(c.state, "closed");
  });

  test("the global WebSocket is used when present", async () => {
    const saved = globalThis.WebSocket;
    globalThis.WebSocket = WebSocket;
    try {
      const c = new ArpcClient(server.url);
      assert.equal(c.WebSocket, WebSocket);
      await c.connect();
      assert.equal(await c.call("/add", [3, 4]), 7);
      c.close();
    } finally {
      globalThis.WebSocket = saved;
    }
  });
});

describe("HTTP-RPC", () => {
  test("call and notify over POST", async () => {
    assert.equal(await httpCall(server.httpUrl, "/add", [5, 6]), 11);
    assert.equal(await httpCall(server.httpUrl, "/echo", "raw", { as: "string" }), "raw");
    await assert.rejects(httpCall(server.httpUrl, "/fail", "y"), (e) => e instanceof RpcError && e.message === "it failed: y");
    await httpNotify(server.httpUrl, "/notes", { over: "http" });
    const c = makeClient(server.url, { httpUrl: server.httpUrl });
    assert.deepEqual((await c.callHttp("/notes_seen")).slice(-1), [{ over: "http" }]);
  });
});

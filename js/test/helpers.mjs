// Test helpers: start the Python server (js/test/server.py) and build clients on `ws`.
import { spawn } from "node:child_process";
import { createInterface } from "node:readline";
import path from "node:path";
import { fileURLToPath } from "node:url";
import WebSocket from "ws";
import { ArpcClient } from "../arpc.js";

const here = path.dirname(fileURLToPath(import.meta.url));
const repo = path.resolve(here, "..", "..");

/** Start the Python test server; resolves with {port, url, httpUrl, stop()}. */
export function startServer(script = path.join(here, "server.py"), args = []) {
  const python = process.env.PYTHON || "python3";
  const env = { ...process.env };
  env.PYTHONPATH = [path.join(repo, "src"), env.PYTHONPATH].filter(Boolean).join(path.delimiter);
  const proc = spawn(python, [script, ...args], { env, stdio: ["pipe", "pipe", "inherit"] });
  return new Promise((resolve, reject) => {
    const lines = createInterface({ input: proc.stdout });
    proc.once("error", reject);
    proc.once("exit", (code) => reject(new Error(`server exited with ${code}`)));
    lines.once("line", (line) => {
      const { port } = JSON.parse(line);
      resolve({
        port,
        url: `ws://127.0.0.1:${port}/rpc`,
        httpUrl: `http://127.0.0.1:${port}/http`,
        stop() {
          return new Promise((done) => {
            if (proc.exitCode !== null) return done();
            proc.once("exit", () => done());
            proc.stdin.end(); // the server stops when its stdin closes
          });
        },
      });
    });
  });
}

const quiet = { log() {}, warn() {}, error() {}, info() {}, debug() {} };

/** A client using the `ws` package (Node 20 has no global WebSocket). */
export function makeClient(url, options = {}) {
  return new ArpcClient(url, { WebSocket, logger: quiet, ...options });
}

/** A promise and its resolve function. */
export function deferred() {
  let resolve, reject;
  const promise = new Promise((res, rej) => {
    resolve = res;
    reject = rej;
  });
  return { promise, resolve, reject };
}

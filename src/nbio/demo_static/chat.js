// The chat page: arpc over WebSocket (./arpc.js) to the nbio demo server.
import { ArpcClient } from "./arpc.js";

const $ = (id) => document.getElementById(id);
const params = new URLSearchParams(location.search);
let wanted = params.get("name") || localStorage.getItem("nbio-chat-name") || "";
if (!wanted) {
  wanted = "guest-" + Math.floor(Math.random() * 1000);
}

const scheme = location.protocol === "https:" ? "wss:" : "ws:";
const client = new ArpcClient(`${scheme}//${location.host}/rpc`, {
  keepalive: 15000,
  reconnectInterval: 1000,
  onClose: () => setStatus("disconnected, reconnecting…", false),
  onReconnect: () => join(),
});

function setStatus(text, ready) {
  $("status").textContent = text;
  $("text").disabled = !ready;
  $("send").disabled = !ready;
  document.body.dataset.ready = ready ? "1" : "0";
}

function time(ts) {
  return new Date(ts).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
}

function add(message) {
  const li = document.createElement("li");
  const t = document.createElement("span");
  t.className = "time";
  t.textContent = time(message.ts);
  const who = document.createElement("span");
  who.className = "name";
  who.textContent = message.name;
  const text = document.createElement("span");
  text.className = "text";
  text.textContent = message.text;
  li.append(t, who, text);
  show(li);
}

function notice(text) {
  const li = document.createElement("li");
  li.className = "notice";
  li.textContent = text;
  show(li);
}

function show(li) {
  const list = $("messages");
  const atBottom = list.scrollTop + list.clientHeight >= list.scrollHeight - 4;
  list.append(li);
  if (atBottom) list.scrollTop = list.scrollHeight;
}

function people(names) {
  $("people").textContent = names.length + " here: " + names.join(", ");
}

client.handle("/chat/message", (ctx) => add(ctx.value));
client.handle("/chat/presence", (ctx) => {
  const p = ctx.value;
  people(p.people);
  if (p.joined) notice(`${p.joined} joined`);
  if (p.left) notice(`${p.left} left`);
});

async function join() {
  try {
    const me = await client.call("/chat/join", wanted, { timeout: 5000 });
    wanted = me.name;
    localStorage.setItem("nbio-chat-name", me.name);
    $("messages").replaceChildren();
    me.history.forEach(add);
    people(me.people);
    setStatus(`connected as ${me.name}`, true);
  } catch (e) {
    setStatus(`could not join: ${e.message}`, false);
  }
}

$("form").addEventListener("submit", async (event) => {
  event.preventDefault();
  const input = $("text");
  const text = input.value.trim();
  if (!text) return;
  input.value = "";
  try {
    await client.call("/chat/send", text, { timeout: 5000 });
  } catch (e) {
    notice(`not sent (${e.message}): ${text}`);
  }
  input.focus();
});

client
  .connect()
  .then(join)
  .catch((e) => setStatus(`cannot connect: ${e.message}`, false));

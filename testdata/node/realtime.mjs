// Realtime sessions through the official SDK's `ws` client (GA, or the beta
// interface with BETA=1), or, with AUTH=subprotocol, a plain `ws` client
// that authenticates as browsers do, in the subprotocol
// openai-insecure-api-key.<key>. SESSIONS sessions run at once, each with
// TURNS text turns, then stay open HOLD_MS.
import OpenAI from 'openai';
import { OpenAIRealtimeWS } from 'openai/realtime/ws';
import { OpenAIRealtimeWS as BetaRealtimeWS } from 'openai/beta/realtime/ws';
import WebSocket from 'ws';
import { env, plain, plainConnection, newSession, record, waiter, sleep, rawHandshake, finish, fail } from './lib.mjs';

const transport = plain ? 'plain' : 'tls';
const wsOptions = plain ? { createConnection: plainConnection } : {};

function realtimeURL() {
  const u = new URL(env.baseURL);
  u.protocol = plain ? 'ws:' : 'wss:';
  u.pathname = u.pathname.replace(/\/$/, '') + '/realtime';
  if (env.model) u.searchParams.set('model', env.model);
  return u.toString();
}

// open connects one session and returns {send, close, session, w}.
function open() {
  const s = newSession();
  const w = waiter();
  const onEvent = (ev) => { record(s, ev); w.feed(ev); };
  return new Promise((resolve) => {
    let socket, send;
    if (env.auth === 'subprotocol') {
      const protocols = ['realtime', 'openai-insecure-api-key.' + env.apiKey];
      if (env.beta) protocols.push('openai-beta.realtime-v1');
      socket = new WebSocket(realtimeURL(), protocols, { perMessageDeflate: false });
      socket.on('message', (data) => onEvent(JSON.parse(String(data))));
      send = (ev) => socket.send(JSON.stringify(ev));
    } else {
      const client = new OpenAI({ apiKey: env.apiKey, baseURL: env.baseURL });
      const Client = env.beta ? BetaRealtimeWS : OpenAIRealtimeWS;
      const rt = new Client({ model: env.model, options: wsOptions }, client);
      rt.on('event', onEvent);
      // Error events reach 'event' too; 'error' also carries transport failures.
      rt.on('error', (err) => { if (!err?.error) { s.failures.push(String(err?.message ?? err)); w.fail(err); } });
      socket = rt.socket;
      send = (ev) => rt.send(ev);
    }
    socket.on('unexpected-response', (_req, res) => {
      s.handshake = { status: res.statusCode, headers: res.headers, body: '' };
      res.resume();
    });
    socket.on('upgrade', (res) => { s.handshake = { status: res.statusCode, headers: res.headers, body: '' }; });
    socket.on('open', () => { s.opened = true; s.subprotocol = socket.protocol; });
    socket.on('error', (err) => { s.failures.push(String(err.message)); w.fail(err); });
    socket.on('close', (code, reason) => { s.closeCode = code; s.closeReason = String(reason); w.fail(new Error('closed ' + code)); });
    resolve({ send, close: () => socket.close(1000, 'done'), session: s, w, socket });
  });
}

async function runSession(i) {
  const c = await open();
  const { session: s, w } = c;
  const created = await w.wait((ev) => ev.type === 'session.created', 'session.created');
  if (created.type !== 'session.created') return s;
  for (let t = 0; t < env.turns; t++) {
    c.send({
      type: 'conversation.item.create',
      item: { type: 'message', role: 'user', content: [{ type: 'input_text', text: `session ${i} turn ${t}` }] },
    });
    c.send({ type: 'response.create', response: env.beta ? { modalities: ['text'] } : { output_modalities: ['text'] } });
    const done = await w.wait((ev) => ev.type === 'response.done', 'response.done');
    if (done.type !== 'response.done') break;
  }
  if (env.holdMs > 0) await sleep(env.holdMs);
  if (c.socket.readyState === WebSocket.OPEN) {
    const closed = new Promise((r) => c.socket.once('close', r));
    c.close();
    await Promise.race([closed, sleep(3000)]);
  }
  return s;
}

try {
  if (env.raw) {
    const protocols = env.auth === 'subprotocol' ? ['realtime', 'openai-insecure-api-key.' + env.apiKey] : [];
    const headers = env.auth === 'subprotocol' ? {} : { Authorization: 'Bearer ' + env.apiKey };
    const s = await rawHandshake(WebSocket, realtimeURL(), protocols, headers);
    finish({ ok: true, transport: 'raw', model: env.model, sessions: [s] });
  }
  const sessions = await Promise.all(Array.from({ length: env.sessions }, (_, i) => runSession(i)));
  finish({ ok: true, transport, model: env.model, sessions });
} catch (err) {
  fail(err);
}

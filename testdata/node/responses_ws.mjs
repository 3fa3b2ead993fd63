// The Responses API's WebSocket mode through the official SDK's ResponsesWS:
// SESSIONS sockets at once, each with TURNS responses, each turn after the
// first continuing the last with previous_response_id (store: false with
// STORE=0), then open HOLD_MS.
import OpenAI from 'openai';
import { ResponsesWS } from 'openai/resources/responses/ws';
import { env, newSession, record, waiter, sleep, finish, fail } from './lib.mjs';

const final = new Set(['response.completed', 'response.incomplete', 'response.failed']);

async function runSession(i) {
  const s = newSession();
  const w = waiter();
  const client = new OpenAI({ apiKey: env.apiKey, baseURL: env.baseURL });
  const rws = new ResponsesWS(client);
  rws.on('event', (ev) => { record(s, ev); w.feed(ev); });
  rws.on('error', (err) => { if (!err?.error) { s.failures.push(String(err?.message ?? err)); w.fail(err); } });
  const closed = new Promise((resolve) => rws.on('close', (code, reason) => {
    s.closeCode = code;
    s.closeReason = String(reason);
    w.fail(new Error('closed ' + code));
    resolve();
  }));
  let previous;
  for (let t = 0; t < env.turns; t++) {
    const ev = { type: 'response.create', model: env.model, input: `socket ${i} turn ${t}`, store: env.store };
    if (previous) ev.previous_response_id = previous;
    rws.send(ev);
    const done = await w.wait((e) => final.has(e.type), 'response.completed');
    if (!final.has(done.type)) break;
    previous = done.response?.id;
  }
  s.opened = rws.socket?.readyState === 1 || s.events.length > 0;
  if (env.holdMs > 0) await sleep(env.holdMs);
  rws.close({ code: 1000, reason: 'done' });
  await Promise.race([closed, sleep(3000)]);
  return s;
}

try {
  const sessions = await Promise.all(Array.from({ length: env.sessions }, (_, i) => runSession(i)));
  finish({ ok: true, transport: new URL(env.baseURL).protocol === 'http:' ? 'plain' : 'tls', model: env.model, sessions });
} catch (err) {
  fail(err);
}

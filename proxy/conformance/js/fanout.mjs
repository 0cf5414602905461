// The Listen fan-out proofs' driver (proxy/conformance/fanout_test.go): many Firebase
// SDK clients (`firebase/firestore` under Node, the full SDK's gRPC build, each its own
// app instance) listening with onSnapshot to the same target, through the proxy and
// directly against the emulator, while a writer changes the data step by step.
//
// Usage: node fanout.mjs CONFIG_JSON, CONFIG_JSON being
//
//   {"mode": "steps" | "cut" | "reads" | "users",
//    "projectId": "p", "direct": "127.0.0.1:8686", "proxied": "127.0.0.1:8080",
//    "clients": 20,                     // steps, cut: proxied listeners
//    "control": "http://127.0.0.1:N"}   // cut: GET /cut, /restore; reads: GET /counts
//
// It prints one JSON object (see each mode). Every listener records every snapshot it
// gets ({fromCache, state} or {error}); a state is the snapshot's documents, sorted by
// id, as [id, normalised data] pairs. A step is settled when every listener's latest
// server snapshot (not from cache) equals the model's state (or, where the model says
// the listener is refused, once it has failed); then the driver waits a quiet period
// for late snapshots, and records what each listener saw during the step: the distinct
// server states, in order. The Go test compares the listeners with each other and with
// the model.

import { initializeApp } from "firebase/app";
import {
  collection, connectFirestoreEmulator, deleteDoc, doc, getDoc, getDocs, getFirestore,
  onSnapshot, query, setDoc, updateDoc, where,
} from "firebase/firestore";
import { normMap } from "./common.mjs";

const cfg = JSON.parse(process.argv[2] || "{}");
const STEP_TIMEOUT_MS = cfg.stepTimeoutMs || 30000;
const QUIET_MS = 400;

function hostPort(addr) {
  const i = addr.lastIndexOf(":");
  return [addr.slice(0, i), Number(addr.slice(i + 1))];
}

let apps = 0;
// open is one app instance of its own, on addr, with mockUserToken when given (the
// emulator reads an unsigned token's user_id as request.auth.uid; "owner" is admin).
function open(addr, mockUserToken) {
  const app = initializeApp({ projectId: cfg.projectId, apiKey: "fanout-api-key", appId: "fanout" }, `app-${apps++}`);
  const db = getFirestore(app);
  const [host, port] = hostPort(addr);
  connectFirestoreEmulator(db, host, port, mockUserToken ? { mockUserToken } : {});
  return db;
}

const stateOf = (qs) => qs.docs.map((d) => [d.id, normMap(d.data())]);
const key = (state) => JSON.stringify(state);

// listen starts a listener named name on target(db) and records what it sees.
function listen(name, db, target, expect) {
  const l = { name, expect, events: [], latest: null, error: null, stepStart: 0 };
  const t = target(db);
  l.unsubscribe = onSnapshot(t, { includeMetadataChanges: true }, (s) => {
    const state = s.docs ? stateOf(s) : (s.exists() ? [[s.id, normMap(s.data())]] : []);
    l.events.push({ fromCache: s.metadata.fromCache, state });
    if (!s.metadata.fromCache) l.latest = key(state);
  }, (e) => {
    l.error = e.code || String(e);
    l.events.push({ error: l.error });
  });
  return l;
}

// settled reports whether l shows what the model expects now: a state, or an error.
function settled(l, model) {
  const want = l.expect(model);
  if (want.error) return l.error === want.error;
  return l.error === null && l.latest === key(want.state);
}

// step waits until every listener is settled, then a quiet period, and returns each
// listener's distinct server states since the step began (or its error).
async function step(name, listeners, model) {
  const deadline = Date.now() + STEP_TIMEOUT_MS;
  let timedOut = [];
  for (;;) {
    const pending = listeners.filter((l) => !settled(l, model));
    if (pending.length === 0) break;
    if (Date.now() > deadline) {
      timedOut = pending.map((l) => l.name);
      break;
    }
    await sleep(20);
  }
  await sleep(QUIET_MS);
  const seen = {};
  for (const l of listeners) {
    const states = [];
    for (const e of l.events.slice(l.stepStart)) {
      const k = e.error ? `error:${e.error}` : e.fromCache ? null : key(e.state);
      if (k !== null && states[states.length - 1] !== k) states.push(k);
    }
    seen[l.name] = states;
    l.stepStart = l.events.length;
  }
  return { name, seen, timedOut };
}

const sleep = (ms) => new Promise((ok) => setTimeout(ok, ms));

// The model: the collection as the writer made it, and a query over it.
class Model {
  constructor() { this.docs = new Map(); }
  set(id, data) { this.docs.set(id, structuredClone(data)); }
  update(id, patch) { this.docs.set(id, { ...this.docs.get(id), ...patch }); }
  delete(id) { this.docs.delete(id); }
  state(pred) {
    return [...this.docs.keys()].sort().filter((id) => pred(this.docs.get(id))).map((id) => [id, normMap(this.docs.get(id))]);
  }
}

async function control(path) {
  const r = await fetch(cfg.control + path);
  if (!r.ok) throw new Error(`control ${path}: ${r.status}`);
  return r.json();
}

// --- the shared query: products where category == "fanout" ---------------------------
const catalogue = (db) => query(collection(db, "products"), where("category", "==", "fanout"));
const inCatalogue = (d) => d.category === "fanout";

async function seedCatalogue(writer, model) {
  for (let i = 1; i <= 5; i++) {
    const data = { name: `item ${i}`, price: i * 10, category: "fanout", tags: ["a", i] };
    await setDoc(doc(writer, `products/f${i}`), data);
    model.set(`f${i}`, data);
  }
  const other = { name: "elsewhere", price: 1, category: "other" };
  await setDoc(doc(writer, "products/o1"), other);
  model.set("o1", other);
}

// The writes every catalogue proof makes, in order: a change, a removal (an update that
// takes a document out of the query), a delete, and a new matching document.
const catalogueWrites = [
  ["change", async (w, m) => { await updateDoc(doc(w, "products/f1"), { price: 11 }); m.update("f1", { price: 11 }); }],
  ["removal", async (w, m) => { await updateDoc(doc(w, "products/f2"), { category: "other" }); m.update("f2", { category: "other" }); }],
  ["delete", async (w, m) => { await deleteDoc(doc(w, "products/f3")); m.delete("f3"); }],
  ["add", async (w, m) => {
    const data = { name: "item 6", price: 60, category: "fanout", tags: [] };
    await setDoc(doc(w, "products/f6"), data);
    m.set("f6", data);
  }],
];

function catalogueListeners() {
  const expect = (m) => ({ state: m.state(inCatalogue) });
  const ls = [listen("direct", open(cfg.direct), catalogue, expect)];
  for (let i = 0; i < cfg.clients; i++) ls.push(listen(`client-${i}`, open(cfg.proxied), catalogue, expect));
  return ls;
}

// steps: {steps: [{name, expected, seen: {listener: [state...]}, timedOut}]}
async function modeSteps() {
  const writer = open(cfg.direct);
  const model = new Model();
  await seedCatalogue(writer, model);
  const ls = catalogueListeners();
  const steps = [];
  const record = async (name) => steps.push({ ...(await step(name, ls, model)), expected: key(model.state(inCatalogue)) });
  await record("initial");
  for (const [name, write] of catalogueWrites) {
    await write(writer, model);
    await record(name);
  }
  return { steps };
}

// cut: the upstream is cut right after the first write is sent, the other writes are
// made while it is cut (the direct listener sees each), then it is restored.
// {valid: [state...] (every state the model went through), steps, events: {listener:
// [every snapshot, from cache or not]}}
async function modeCut() {
  const writer = open(cfg.direct);
  const model = new Model();
  await seedCatalogue(writer, model);
  const ls = catalogueListeners();
  const direct = ls.slice(0, 1);
  const valid = [key(model.state(inCatalogue))];
  const steps = [{ ...(await step("initial", ls, model)), expected: valid[0] }];
  for (const l of ls) l.cutFrom = l.events.length;
  const [first, ...rest] = catalogueWrites;
  const sent = first[1](writer, model);
  await control("/cut");
  await sent;
  valid.push(key(model.state(inCatalogue)));
  await step("while cut: " + first[0], direct, model);
  for (const [name, write] of rest) {
    await write(writer, model);
    valid.push(key(model.state(inCatalogue)));
    await step("while cut: " + name, direct, model);
  }
  await sleep(500);
  await control("/restore");
  steps.push({ ...(await step("after restore", ls, model)), expected: key(model.state(inCatalogue)) });
  const events = {};
  for (const l of ls) events[l.name] = l.events.slice(l.cutFrom).map((e) => (e.error ? { error: e.error } : { fromCache: e.fromCache, state: key(e.state) }));
  return { valid, steps, events };
}

// reads: one proxied client listens to the catalogue query and to products/f1; once
// settled, another proxied client reads both with getDocs/getDoc while the meter is
// read before and after. {listened, direct: {query, doc}, proxied: {query, doc},
// meter: {before, after}}
async function modeReads() {
  const writer = open(cfg.direct);
  const model = new Model();
  await seedCatalogue(writer, model);
  const one = (db) => doc(db, "products/f1");
  const listenerDB = open(cfg.proxied);
  const ls = [
    listen("query listener", listenerDB, catalogue, (m) => ({ state: m.state(inCatalogue) })),
    listen("document listener", listenerDB, one, (m) => ({ state: m.state((d) => d === m.docs.get("f1")) })),
  ];
  const listened = await step("listening", ls, model);
  const read = async (db) => {
    const q = await getDocs(catalogue(db));
    const d = await getDoc(one(db));
    return { query: stateOf(q), doc: d.exists() ? normMap(d.data()) : null };
  };
  const direct = await read(open(cfg.direct));
  const reader = open(cfg.proxied);
  const before = await control("/counts");
  const proxied = await read(reader);
  const after = await control("/counts");
  return { listened, direct, proxied, meter: { before, after } };
}

// users: alice and bob (mockUserToken user_id) each listen, directly and through the
// proxy, to the sessions of alice and to those of bob; the emulator's rules let a user
// read only sessions whose owner is their uid. The writer is the emulator's owner.
// {steps: [...]} as steps, listeners named "<user> reads <owner>'s via <direct|proxy>".
async function modeUsers() {
  const writer = open(cfg.direct, "owner");
  const model = new Model();
  const put = async (id, data) => { await setDoc(doc(writer, `sessions/${id}`), data); model.set(id, data); };
  await put("a1", { owner: "alice", cart: ["apples"] });
  await put("a2", { owner: "alice", cart: [] });
  await put("b1", { owner: "bob", cart: ["pears"] });
  const ownedBy = (o) => (db) => query(collection(db, "sessions"), where("owner", "==", o));
  const ls = [];
  for (const user of ["alice", "bob"]) {
    for (const owner of ["alice", "bob"]) {
      const expect = (m) => (user === owner ? { state: m.state((d) => d.owner === owner) } : { error: "permission-denied" });
      for (const [via, addr] of [["direct", cfg.direct], ["proxy", cfg.proxied]]) {
        ls.push(listen(`${user} reads ${owner}'s via ${via}`, open(addr, { user_id: user, sub: user }), ownedBy(owner), expect));
      }
    }
  }
  const steps = [];
  const record = async (name) => steps.push({ ...(await step(name, ls, model)) });
  await record("initial");
  await updateDoc(doc(writer, "sessions/a1"), { cart: ["apples", "figs"] });
  model.update("a1", { cart: ["apples", "figs"] });
  await record("alice's cart changes");
  await put("b2", { owner: "bob", cart: ["plums"] });
  await record("bob gets a new session");
  await updateDoc(doc(writer, "sessions/a2"), { owner: "bob" });
  model.update("a2", { owner: "bob" });
  await record("a session moves from alice to bob");
  return { steps };
}

const modes = { steps: modeSteps, cut: modeCut, reads: modeReads, users: modeUsers };
if (!modes[cfg.mode] || !cfg.projectId || !cfg.direct || !cfg.proxied) {
  console.error("usage: node fanout.mjs '{\"mode\": \"steps|cut|reads|users\", \"projectId\", \"direct\", \"proxied\", ...}'");
  process.exit(2);
}
let out;
try {
  out = await modes[cfg.mode]();
} catch (e) {
  out = { error: String(e && e.stack || e) };
}
// Exit once stdout is flushed: the SDKs' gRPC channels would hold the process.
process.stdout.write(JSON.stringify(out) + "\n", () => process.exit(0));

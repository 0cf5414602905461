// Runs one list of Firestore scenarios with the Firebase JS SDK (lite: REST,
// Content-Type text/plain, ?key=, enums as names) against host:port, in a project
// seeded with the Harvest Hub sample, and prints one JSON object: scenario name ->
// {result} or {failed}. proxy/conformance runs it against the emulator and through the
// proxy and compares the two outputs byte for byte.
//
// Usage: node scenarios.mjs HOST:PORT PROJECT_ID
//
// Normalised away, because they must differ between two runs: server timestamps
// (a Timestamp within 30 minutes of now) and automatic document ids.

import { initializeApp } from "firebase/app";
import {
  Bytes,
  FieldPath,
  GeoPoint,
  Timestamp,
  addDoc,
  and,
  arrayRemove,
  arrayUnion,
  average,
  collection,
  collectionGroup,
  connectFirestoreEmulator,
  count,
  deleteDoc,
  deleteField,
  doc,
  documentId,
  endAt,
  endBefore,
  getAggregate,
  getCount,
  getDoc,
  getDocs,
  getFirestore,
  increment,
  limit,
  limitToLast,
  or,
  orderBy,
  query,
  runTransaction,
  serverTimestamp,
  setDoc,
  startAfter,
  startAt,
  sum,
  updateDoc,
  where,
  writeBatch,
  DocumentReference,
} from "firebase/firestore/lite";

const [addr, projectId] = process.argv.slice(2);
if (!addr || !projectId) {
  console.error("usage: node scenarios.mjs HOST:PORT PROJECT_ID");
  process.exit(2);
}
const [host, port] = [addr.slice(0, addr.lastIndexOf(":")), Number(addr.slice(addr.lastIndexOf(":") + 1))];

const app = initializeApp({ projectId, apiKey: "conformance-api-key", appId: "conformance" }, "conformance");
const db = getFirestore(app);
connectFirestoreEmulator(db, host, port);

const SERVER_TIME_WINDOW_MS = 30 * 60 * 1000;

function norm(v) {
  if (v === null) return { null: true };
  if (typeof v === "boolean") return { bool: v };
  if (typeof v === "number") return { number: Object.is(v, -0) ? "-0" : v };
  if (typeof v === "string") return { string: v };
  if (v instanceof Timestamp) {
    if (Math.abs(Date.now() - v.toMillis()) < SERVER_TIME_WINDOW_MS) return { time: "<server time>" };
    return { time: v.toDate().toISOString(), nanos: v.nanoseconds };
  }
  if (v instanceof GeoPoint) return { geo: [v.latitude, v.longitude] };
  if (v instanceof Bytes) return { bytes: v.toBase64() };
  if (v instanceof DocumentReference) return { ref: v.path };
  if (Array.isArray(v)) return { array: v.map(norm) };
  if (typeof v === "object") return { map: normMap(v) };
  return { unknown: String(v) };
}

function normMap(m) {
  const out = {};
  for (const k of Object.keys(m).sort()) out[k] = norm(m[k]);
  return out;
}

function snap(s) {
  return s.exists() ? { path: s.ref.path, exists: true, data: normMap(s.data()) } : { path: s.ref.path, exists: false };
}

async function get(path) {
  return snap(await getDoc(doc(db, path)));
}

async function docs(q) {
  return (await getDocs(q)).docs.map(snap);
}

// queries runs each named query in name order; each is chosen to find something.
async function queries(qs) {
  const out = {};
  for (const name of Object.keys(qs).sort()) {
    const res = await docs(qs[name]);
    if (res.length === 0) throw new Error(`${name}: found nothing; the scenario wants a non-empty answer`);
    out[name] = res;
  }
  return out;
}

// code is what the SDK reports for a failed call, or "ok".
async function code(p) {
  try {
    await p;
    return "ok";
  } catch (e) {
    return e.code ?? `no code: ${e}`;
  }
}

async function expectCode(p, want) {
  const c = await code(p);
  if (c !== want) throw new Error(`want ${want}, got ${c}`);
  return c;
}

const writtenTime = Timestamp.fromDate(new Date("2026-05-04T03:02:01.123Z"));

const scenarios = [
  ["get existing and missing documents", async () => {
    const out = [];
    for (const p of ["products/prod-001", "farmers/farmer-01", "farmers/farmer-01/products/prod-001",
      "users/user-01", "users/user-01/orders/order-01-1", "sessions/sess-01", "products/no-such-product"]) {
      out.push(await get(p));
    }
    return out;
  }],
  ["set every value type, then get", async () => {
    const before = await get("products/js-1");
    await setDoc(doc(db, "products/js-1"), {
      name: "Typed", price: 1.5, stock: 3, organic: true, none: null,
      bytes: Bytes.fromUint8Array(new Uint8Array([0, 1, 2, 255])), at: writtenTime,
      where: new GeoPoint(45.75, 4.85), farmer: doc(db, "farmers/farmer-01"),
      tags: ["a", 2, 3.5, { deep: ["x"] }], nested: { a: 1, b: { c: "d" } },
      big: Number.MAX_SAFE_INTEGER, unicode: "äö €😀",
    });
    return [before, await get("products/js-1")];
  }],
  ["set with merge", async () => {
    const ref = doc(db, "products/js-1");
    await setDoc(ref, { stock: 4, nested: { b: { e: "f" } } }, { merge: true });
    const a = await get("products/js-1");
    await setDoc(ref, { name: "Merged", price: 9, ignored: "x" }, { mergeFields: ["name", "price"] });
    return [a, await get("products/js-1")];
  }],
  ["update field paths, nested and deleted", async () => {
    await updateDoc(doc(db, "products/js-1"), "nested.a", 10, "nested.b.c", deleteField(),
      new FieldPath("odd.key", "with space"), "x", "organic", deleteField(), "stock", 5);
    return get("products/js-1");
  }],
  ["delete, then get", async () => {
    await get("products/js-1");
    await deleteDoc(doc(db, "products/js-1"));
    const after = await get("products/js-1");
    return { after, deleteAgain: await code(deleteDoc(doc(db, "products/js-1"))) };
  }],
  ["addDoc with an automatic id", async () => {
    const ref = await addDoc(collection(db, "users/user-01/orders"), { status: "placed", total: 12.5 });
    const s = await getDoc(ref);
    const orders = (await docs(query(collection(db, "users/user-01/orders"), where("total", "==", 12.5))))
      .map((d) => ({ ...d, path: d.path.replace(ref.id, "<auto id>") }));
    return { idLen: ref.id.length, data: normMap(s.data()), query: orders };
  }],
  ["transforms", async () => {
    const ref = doc(db, "products/prod-002");
    await get("products/prod-002");
    await updateDoc(ref, { touchedAt: serverTimestamp(), stock: increment(2), price: increment(0.25),
      views: increment(1), tags: arrayUnion("transformed", "local") });
    const a = await get("products/prod-002");
    await updateDoc(ref, { tags: arrayRemove("transformed") });
    if (!a.data.touchedAt) throw new Error("serverTimestamp did not set touchedAt");
    return [a, await get("products/prod-002")];
  }],
  ["writeBatch", async () => {
    const paths = ["products/batch-1", "products/prod-003", "farmers/farmer-02", "products/prod-004",
      "farmers/farmer-02/products/prod-002"];
    const before = [];
    for (const p of paths) before.push(await get(p));
    const b = writeBatch(db);
    b.set(doc(db, paths[0]), { name: "Batched", price: 2 });
    b.set(doc(db, paths[1]), { name: "Replaced" });
    b.update(doc(db, paths[2]), { rating: 4.9 });
    b.delete(doc(db, paths[3]));
    b.set(doc(db, paths[4]), { stock: 0 }, { merge: true });
    await b.commit();
    const after = [];
    for (const p of paths) after.push(await get(p));
    return { before, after };
  }],
  ["runTransaction: 3 concurrent increments of one counter", async () => {
    const ref = doc(db, "products/counter");
    await setDoc(ref, { n: 0 });
    await get("products/counter");
    await Promise.all([1, 2, 3].map(() => runTransaction(db, async (tx) => {
      const s = await tx.get(ref);
      tx.set(ref, { n: s.data().n + 1 });
    }, { maxAttempts: 50 })));
    const s = await get("products/counter");
    if (s.data.n.number !== 3) throw new Error(`counter after 3 increments: ${JSON.stringify(s.data.n)}`);
    return s;
  }],
  ["runTransaction reads and writes; a failed one changes nothing", async () => {
    await runTransaction(db, async (tx) => {
      const f = await tx.get(doc(db, "farmers/farmer-03"));
      const nobody = await tx.get(doc(db, "farmers/nobody"));
      if (!f.exists() || nobody.exists()) throw new Error("transaction read");
      tx.update(f.ref, { visited: true });
    });
    const failed = await code(runTransaction(db, async (tx) => {
      tx.update(doc(db, "farmers/nobody"), { x: 1 });
    }, { maxAttempts: 1 }));
    return { after: await get("farmers/farmer-03"), failedTx: failed, nobody: await get("farmers/nobody") };
  }],
  ["queries with every operator", async () => {
    const p = collection(db, "products");
    const f1 = (...c) => query(p, where("farmerId", "==", "farmer-01"), ...c);
    const cheap = (...c) => query(p, where("price", "<", 4), ...c);
    return queries({
      "==": query(p, where("category", "==", "honey")),
      "!=": cheap(where("category", "!=", "fruit")),
      "<": f1(where("price", "<", 5)),
      "<=": f1(where("price", "<=", 5)),
      ">": f1(where("price", ">", 15)),
      ">=": f1(where("stock", ">=", 150)),
      "array-contains": query(p, where("tags", "array-contains", "local")),
      "array-contains-any": cheap(where("tags", "array-contains-any", ["vegan", "bulk"])),
      "in": cheap(where("category", "in", ["eggs", "honey"])),
      "not-in": cheap(where("category", "not-in", ["fruit", "dairy", "eggs"])),
      "and/or": query(p, or(where("category", "==", "eggs"), and(where("price", ">", 19), where("organic", "==", true)))),
    });
  }],
  ["orderBy, limit and limitToLast", async () => {
    const p = collection(db, "products");
    return queries({
      "price desc limit 5": query(p, orderBy("price", "desc"), limit(5)),
      "two orders": query(p, orderBy("category"), orderBy("price", "desc"), limit(7)),
      "limitToLast 3": query(p, orderBy("price"), limitToLast(3)),
      "by document id": query(p, orderBy(documentId()), limit(4)),
      "where + order + limit": query(p, where("category", "==", "fruit"), orderBy("stock", "desc"), limit(4)),
      "nested collection": query(collection(db, "farmers/farmer-04/products"), orderBy("name"), limit(6)),
      "user orders by created": query(collection(db, "users/user-02/orders"), orderBy("createdAt", "desc")),
    });
  }],
  ["cursors with values and snapshots", async () => {
    const q = (...c) => query(collection(db, "farmers/farmer-05/products"), orderBy("price"), ...c);
    const all = (await getDocs(q())).docs;
    if (all.length < 10) throw new Error(`cursor base query: ${all.length} documents`);
    const mid = all[Math.floor(all.length / 2)];
    const price = mid.get("price");
    return queries({
      "startAt value": q(startAt(price), limit(3)),
      "startAfter value": q(startAfter(price), limit(3)),
      "endBefore value": q(endBefore(price)),
      "endAt value": q(endAt(price)),
      "startAt snapshot": q(startAt(mid), limit(3)),
      "startAfter snap": q(startAfter(mid), limit(3)),
      "endBefore snapshot": q(endBefore(mid)),
      "between values": q(startAfter(all[2].get("price")), endAt(all[6].get("price"))),
      "between snapshots": q(startAfter(all[2]), endAt(all[6])),
      "limitToLast cursor": q(endBefore(mid), limitToLast(2)),
      "doc id cursor": query(collection(db, "products"), orderBy(documentId()), startAfter("prod-290")),
    });
  }],
  ["collectionGroup queries", async () => queries({
    "products of farmer-02": query(collectionGroup(db, "products"), where("farmerId", "==", "farmer-02"), orderBy("price")),
    "orders placed": query(collectionGroup(db, "orders"), where("status", "==", "placed"), orderBy("total", "desc"), limit(10)),
  })],
  ["getCount and getAggregate sum/average", async () => {
    const out = {};
    const qs = {
      fruit: query(collection(db, "products"), where("category", "==", "fruit")),
      farmer: query(collection(db, "farmers/farmer-06/products")),
      group: query(collectionGroup(db, "products"), where("organic", "==", true)),
      empty: query(collection(db, "products"), where("category", "==", "none")),
      orders2: query(collection(db, "users/user-02/orders")),
    };
    for (const name of Object.keys(qs).sort()) {
      const c = (await getCount(qs[name])).data();
      const a = (await getAggregate(qs[name], { n: count(), s: sum("price"), a: average("price") })).data();
      out[name] = [c, a];
    }
    await setDoc(doc(db, "products/agg-extra"), { category: "fruit", price: 100 });
    out["fruit after write"] = (await getAggregate(qs.fruit, { n: count(), s: sum("price"), a: average("price") })).data();
    return out;
  }],
  ["error codes", async () => {
    const out = {};
    out["update missing"] = await expectCode(updateDoc(doc(db, "products/missing"), { x: 1 }), "not-found");
    const b = writeBatch(db);
    b.set(doc(db, "products/batch-err"), { x: 1 });
    b.update(doc(db, "products/missing"), { x: 1 });
    out["batch with update of missing"] = await expectCode(b.commit(), "not-found");
    out["reserved id"] = await code(setDoc(doc(db, "products/__reserved__"), { x: 1 }));
    out["after"] = [await get("products/batch-err"), await get("products/missing")];
    return out;
  }],
  ["reads see the writes before them", async () => {
    const q = query(collection(db, "products"), where("category", "==", "herbs"), orderBy("price"), limit(3));
    const g = query(collectionGroup(db, "products"), where("category", "==", "herbs"), orderBy("price"), limit(3));
    const steps = [];
    const look = async () => steps.push([await docs(q), await docs(g), await get("products/prod-007"),
      await get("farmers/farmer-07/products/prod-007"), (await getCount(q)).data()]);
    await look();
    for (const p of ["products/prod-007", "farmers/farmer-07/products/prod-007"]) {
      await updateDoc(doc(db, p), { price: 0.01 });
      await look();
    }
    await deleteDoc(doc(db, "products/prod-007"));
    await look();
    return steps;
  }],
];

const out = {};
for (const [name, run] of scenarios) {
  try {
    out[name] = { result: await run() };
  } catch (e) {
    out[name] = { failed: `${e.code ?? ""} ${e.message ?? e}`.trim() };
  }
}
// Exit only once the output is flushed: stdout to a pipe is asynchronous, and the SDK
// keeps sockets open that would otherwise hold the process.
process.stdout.write(JSON.stringify(out) + "\n", () => process.exit(0));

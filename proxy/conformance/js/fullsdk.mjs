// Runs one list of Firestore scenarios with the Firebase SDK (`firebase` 12.x) as a
// Next.js server component uses it: `firebase/firestore` as Node resolves it, which is
// the full SDK's Node build, speaking gRPC (HTTP/2 cleartext to an emulator host): reads
// on the Listen stream, writes on the Write stream, transactions and aggregations as
// unary RPCs. Configured by nothing but connectFirestoreEmulator(db, host, port), in a
// project seeded with the Harvest Hub sample. Prints one JSON object: scenario name ->
// {result} or {failed}. proxy/conformance runs it against the emulator and through the
// proxy and compares the two outputs.
//
// Usage: node fullsdk.mjs HOST:PORT PROJECT_ID

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
  getAggregateFromServer,
  getCountFromServer,
  getDoc,
  getDocFromServer,
  getDocs,
  getDocsFromServer,
  getFirestore,
  increment,
  limit,
  limitToLast,
  onSnapshot,
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
} from "firebase/firestore";
import { args, code, expectCode, nonEmpty, normMap, runAll, snap, until } from "./common.mjs";

const { host, port, projectId } = args("node fullsdk.mjs HOST:PORT PROJECT_ID");

// The app's code: its config, and the emulator host in development.
function open(name) {
  const app = initializeApp({ projectId, apiKey: "conformance-api-key", appId: "conformance" }, name);
  const db = getFirestore(app);
  connectFirestoreEmulator(db, host, port);
  return db;
}
const db = open("conformance");
// A second app instance stands in for another server writing while the first listens.
const other = open("other");

const get = async (path) => snap(await getDoc(doc(db, path)));
const docs = async (q) => (await getDocs(q)).docs.map(snap);
const writtenTime = Timestamp.fromDate(new Date("2026-05-04T03:02:01.123Z"));

const scenarios = [
  ["get existing and missing documents", async () => {
    const out = [];
    for (const p of ["products/prod-001", "farmers/farmer-01", "farmers/farmer-01/products/prod-001",
      "users/user-01", "users/user-01/orders/order-01-1", "sessions/sess-01", "products/no-such-product"]) {
      out.push(await get(p));
    }
    const fromServer = [snap(await getDocFromServer(doc(db, "products/prod-002"))),
      snap(await getDocFromServer(doc(db, "products/nope")))];
    return { one: out, fromServer };
  }],
  ["repeated reads answer the same", async () => {
    const q = query(collection(db, "products"), where("category", "==", "honey"), orderBy("price"), limit(5));
    const rounds = [];
    for (let i = 0; i < 3; i++) {
      rounds.push([snap(await getDocFromServer(doc(db, "products/prod-010"))),
        (await getDocsFromServer(q)).docs.map(snap), (await getCountFromServer(q)).data()]);
    }
    if (JSON.stringify(rounds[0]) !== JSON.stringify(rounds[2])) throw new Error("a repeated read answered differently");
    return rounds[0];
  }],
  ["set every value type, then get", async () => {
    const before = await get("products/full-1");
    await setDoc(doc(db, "products/full-1"), {
      name: "Typed", price: 1.5, stock: 3, organic: true, none: null,
      bytes: Bytes.fromUint8Array(new Uint8Array([0, 1, 2, 255])), at: writtenTime,
      where: new GeoPoint(45.75, 4.85), farmer: doc(db, "farmers/farmer-01"),
      tags: ["a", 2, 3.5, { deep: ["x"] }], nested: { a: 1, b: { c: "d" } },
      big: Number.MAX_SAFE_INTEGER, unicode: "äö €😀",
    });
    return [before, await get("products/full-1")];
  }],
  ["set with merge", async () => {
    const ref = doc(db, "products/full-1");
    await setDoc(ref, { stock: 4, nested: { b: { e: "f" } } }, { merge: true });
    const a = await get("products/full-1");
    await setDoc(ref, { name: "Merged", price: 9, ignored: "x" }, { mergeFields: ["name", "price"] });
    return [a, await get("products/full-1")];
  }],
  ["update field paths, nested and deleted", async () => {
    await updateDoc(doc(db, "products/full-1"), "nested.a", 10, "nested.b.c", deleteField(),
      new FieldPath("odd.key", "with space"), "x", "organic", deleteField(), "stock", 5);
    return get("products/full-1");
  }],
  ["delete, then get", async () => {
    await get("products/full-1");
    await deleteDoc(doc(db, "products/full-1"));
    const after = await get("products/full-1");
    return { after, deleteAgain: await code(deleteDoc(doc(db, "products/full-1"))) };
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
    const a = snap(await getDocFromServer(ref));
    await updateDoc(ref, { tags: arrayRemove("transformed") });
    if (!a.data.touchedAt) throw new Error("serverTimestamp did not set touchedAt");
    return [a, snap(await getDocFromServer(ref))];
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
    for (const p of paths) after.push(snap(await getDocFromServer(doc(db, p))));
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
    const s = snap(await getDocFromServer(ref));
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
    return {
      after: snap(await getDocFromServer(doc(db, "farmers/farmer-03"))),
      failedTx: failed,
      nobody: snap(await getDocFromServer(doc(db, "farmers/nobody"))),
    };
  }],
  ["queries with every operator", async () => {
    const p = collection(db, "products");
    const f1 = (...c) => query(p, where("farmerId", "==", "farmer-01"), ...c);
    const cheap = (...c) => query(p, where("price", "<", 4), ...c);
    return nonEmpty({
      "==": () => docs(query(p, where("category", "==", "honey"))),
      "!=": () => docs(cheap(where("category", "!=", "fruit"))),
      "<": () => docs(f1(where("price", "<", 5))),
      "<=": () => docs(f1(where("price", "<=", 5))),
      ">": () => docs(f1(where("price", ">", 15))),
      ">=": () => docs(f1(where("stock", ">=", 150))),
      "array-contains": () => docs(query(p, where("tags", "array-contains", "local"))),
      "array-contains-any": () => docs(cheap(where("tags", "array-contains-any", ["vegan", "bulk"]))),
      "in": () => docs(cheap(where("category", "in", ["eggs", "honey"]))),
      "not-in": () => docs(cheap(where("category", "not-in", ["fruit", "dairy", "eggs"]))),
      "and/or": () => docs(query(p, or(where("category", "==", "eggs"), and(where("price", ">", 19), where("organic", "==", true))))),
    });
  }],
  ["orderBy, limit, limitToLast and cursors", async () => {
    const p = collection(db, "products");
    const q = (...c) => query(collection(db, "farmers/farmer-05/products"), orderBy("price"), ...c);
    const all = (await getDocs(q())).docs;
    if (all.length < 10) throw new Error(`cursor base query: ${all.length} documents`);
    const mid = all[Math.floor(all.length / 2)];
    return nonEmpty({
      "price desc limit 5": () => docs(query(p, orderBy("price", "desc"), limit(5))),
      "two orders": () => docs(query(p, orderBy("category"), orderBy("price", "desc"), limit(7))),
      "limitToLast 3": () => docs(query(p, orderBy("price"), limitToLast(3))),
      "by document id": () => docs(query(p, orderBy(documentId()), limit(4))),
      "startAt value": () => docs(q(startAt(mid.get("price")), limit(3))),
      "startAfter snapshot": () => docs(q(startAfter(mid), limit(3))),
      "endBefore snapshot": () => docs(q(endBefore(mid))),
      "between values": () => docs(q(startAfter(all[2].get("price")), endAt(all[6].get("price")))),
    });
  }],
  ["collectionGroup queries", async () => nonEmpty({
    "products of farmer-02": () => docs(query(collectionGroup(db, "products"), where("farmerId", "==", "farmer-02"), orderBy("price"))),
    "orders placed": () => docs(query(collectionGroup(db, "orders"), where("status", "==", "placed"), orderBy("total", "desc"), limit(10))),
  })],
  ["getCountFromServer and getAggregateFromServer", async () => {
    const out = {};
    const qs = {
      fruit: query(collection(db, "products"), where("category", "==", "fruit")),
      farmer: query(collection(db, "farmers/farmer-06/products")),
      group: query(collectionGroup(db, "products"), where("organic", "==", true)),
      empty: query(collection(db, "products"), where("category", "==", "none")),
    };
    const agg = (q) => getAggregateFromServer(q, { n: count(), s: sum("price"), a: average("price") });
    for (const name of Object.keys(qs).sort()) {
      out[name] = [(await getCountFromServer(qs[name])).data(), (await agg(qs[name])).data()];
    }
    await setDoc(doc(db, "products/agg-extra"), { category: "fruit", price: 100 });
    out["fruit after write"] = (await agg(qs.fruit)).data();
    return out;
  }],
  ["error codes", async () => {
    const out = {};
    out["update missing"] = await expectCode(updateDoc(doc(db, "products/missing"), { x: 1 }), "not-found");
    const b = writeBatch(db);
    b.set(doc(db, "products/batch-err"), { x: 1 });
    b.update(doc(db, "products/missing"), { x: 1 });
    out["batch with update of missing"] = await expectCode(b.commit(), "not-found");
    out["reserved id"] = await expectCode(setDoc(doc(db, "products/__reserved__"), { x: 1 }), "invalid-argument");
    out["after"] = [snap(await getDocFromServer(doc(db, "products/batch-err"))),
      snap(await getDocFromServer(doc(db, "products/missing")))];
    return out;
  }],
  ["reads see the writes before them", async () => {
    const q = query(collection(db, "products"), where("category", "==", "herbs"), orderBy("price"), limit(3));
    const g = query(collectionGroup(db, "products"), where("category", "==", "herbs"), orderBy("price"), limit(3));
    const steps = [];
    const look = async () => steps.push([(await getDocsFromServer(q)).docs.map(snap), (await getDocsFromServer(g)).docs.map(snap),
      snap(await getDocFromServer(doc(db, "products/prod-007"))),
      snap(await getDocFromServer(doc(db, "farmers/farmer-07/products/prod-007"))), (await getCountFromServer(q)).data()]);
    await look();
    for (const p of ["products/prod-007", "farmers/farmer-07/products/prod-007"]) {
      await updateDoc(doc(db, p), { price: 0.01 });
      await look();
    }
    await deleteDoc(doc(db, "products/prod-007"));
    await look();
    await setDoc(doc(other, "products/prod-007"), { category: "herbs", price: 0.02, name: "Written by another app" });
    await look();
    return steps;
  }],
  ["onSnapshot sees a later write", async () => {
    const ref = doc(db, "products/snap-1");
    const q = query(collection(db, "farmers/farmer-08/products"), orderBy("name"));
    const fromServer = (s) => !s.metadata.fromCache;
    const initialDoc = await until((next, err) => onSnapshot(ref, next, err), fromServer, "document listener");
    const initialQuery = await until((next, err) => onSnapshot(q, next, err), fromServer, "query listener");
    // Listen again and wait for the writes of another app instance to arrive.
    const docSeen = until((next, err) => onSnapshot(ref, next, err), (s) => s.exists(), "document listener");
    const querySeen = until((next, err) => onSnapshot(q, next, err),
      (s) => s.docs.some((d) => d.id === "snap-new"), "query listener");
    await setDoc(doc(other, "products/snap-1"), { name: "Snapped", price: 1 });
    await setDoc(doc(other, "farmers/farmer-08/products/snap-new"), { name: "A new one", price: 2 });
    const [d, qs] = await Promise.all([docSeen, querySeen]);
    return {
      initialDoc: snap(initialDoc),
      initialQuery: initialQuery.docs.map(snap),
      doc: snap(d),
      query: qs.docs.map(snap),
      changes: qs.docChanges().map((c) => [c.type, c.doc.ref.path]).filter(([, p]) => p.endsWith("/snap-new")),
    };
  }],
];

await runAll(scenarios);

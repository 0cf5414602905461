// Runs one list of Firestore scenarios with firebase-admin as an app uses it: its
// defaults (gRPC, HTTP/2 cleartext to an emulator host), configured by nothing but
// FIRESTORE_EMULATOR_HOST, in a project seeded with the Harvest Hub sample. Prints one
// JSON object: scenario name -> {result} or {failed}. proxy/conformance runs it against
// the emulator and through the proxy and compares the two outputs.
//
// Usage: node admin.mjs HOST:PORT PROJECT_ID
// (it sets FIRESTORE_EMULATOR_HOST=HOST:PORT and GOOGLE_CLOUD_PROJECT=PROJECT_ID for
// itself, exactly as a developer's shell would).

import { args, code, expectCode, nonEmpty, normMap, runAll, sansAutoId, snap, until } from "./common.mjs";

const { addr, projectId } = args("node admin.mjs HOST:PORT PROJECT_ID");
process.env.FIRESTORE_EMULATOR_HOST = addr;
process.env.GOOGLE_CLOUD_PROJECT = projectId;
process.env.METADATA_SERVER_DETECTION ??= "none";

const { initializeApp } = await import("firebase-admin/app");
const { getFirestore, FieldPath, FieldValue, GeoPoint, Timestamp, AggregateField } = await import("firebase-admin/firestore");

// The app's code: no options at all; the project comes from the environment.
const db = getFirestore(initializeApp());
// A second app instance stands in for another server writing while the first listens.
const other = getFirestore(initializeApp({}, "other"));

const NOT_FOUND = 5;
const ALREADY_EXISTS = 6;
const INVALID_ARGUMENT = 3;
const FAILED_PRECONDITION = 9;

const get = async (path) => snap(await db.doc(path).get());
const docs = async (q) => (await q.get()).docs.map(snap);
const writtenTime = Timestamp.fromDate(new Date("2026-05-04T03:02:01.123Z"));

const scenarios = [
  ["get existing and missing documents", async () => {
    const out = [];
    for (const p of ["products/prod-001", "farmers/farmer-01", "farmers/farmer-01/products/prod-001",
      "users/user-01", "users/user-01/orders/order-01-1", "sessions/sess-01", "products/no-such-product"]) {
      out.push(await get(p));
    }
    const many = await db.getAll(db.doc("products/prod-002"), db.doc("products/nope"), db.doc("farmers/farmer-02"));
    const masked = await db.getAll(db.doc("products/prod-003"), { fieldMask: ["name", "price"] });
    return { one: out, getAll: many.map(snap), masked: masked.map(snap) };
  }],
  ["repeated reads answer the same", async () => {
    const q = db.collection("products").where("category", "==", "honey").orderBy("price").limit(5);
    const rounds = [];
    for (let i = 0; i < 3; i++) {
      rounds.push([await get("products/prod-010"), await docs(q), (await q.count().get()).data()]);
    }
    if (JSON.stringify(rounds[0]) !== JSON.stringify(rounds[2])) throw new Error("a repeated read answered differently");
    return rounds[0];
  }],
  ["set every value type, then get", async () => {
    const before = await get("products/admin-1");
    await db.doc("products/admin-1").set({
      name: "Typed", price: 1.5, stock: 3, organic: true, none: null,
      bytes: Buffer.from([0, 1, 2, 255]), at: writtenTime,
      where: new GeoPoint(45.75, 4.85), farmer: db.doc("farmers/farmer-01"),
      tags: ["a", 2, 3.5, { deep: ["x"] }], nested: { a: 1, b: { c: "d" } },
      big: Number.MAX_SAFE_INTEGER, unicode: "äö €😀",
    });
    return [before, await get("products/admin-1")];
  }],
  ["set with merge", async () => {
    const ref = db.doc("products/admin-1");
    await ref.set({ stock: 4, nested: { b: { e: "f" } } }, { merge: true });
    const a = await get("products/admin-1");
    await ref.set({ name: "Merged", price: 9, ignored: "x" }, { mergeFields: ["name", "price"] });
    return [a, await get("products/admin-1")];
  }],
  ["update field paths, nested and deleted", async () => {
    await db.doc("products/admin-1").update("nested.a", 10, "nested.b.c", FieldValue.delete(),
      new FieldPath("odd.key", "with space"), "x", "organic", FieldValue.delete(), "stock", 5);
    return get("products/admin-1");
  }],
  ["create, then create again", async () => {
    const ref = db.doc("products/admin-created");
    await ref.create({ name: "Created" });
    return { after: await get("products/admin-created"), again: await expectCode(ref.create({ name: "x" }), ALREADY_EXISTS) };
  }],
  ["delete, then get", async () => {
    await get("products/admin-1");
    await db.doc("products/admin-1").delete();
    const after = await get("products/admin-1");
    return {
      after,
      deleteAgain: await code(db.doc("products/admin-1").delete()),
      deleteMissingWithPrecondition: await expectCode(db.doc("products/admin-1").delete({ exists: true }), NOT_FOUND),
    };
  }],
  ["add with an automatic id", async () => {
    const ref = await db.collection("users/user-01/orders").add({ status: "placed", total: 12.5 });
    const s = await ref.get();
    const orders = (await docs(db.collection("users/user-01/orders").where("total", "==", 12.5)))
      .map((d) => ({ ...d, path: d.path.replace(ref.id, "<auto id>") }));
    return { idLen: ref.id.length, data: normMap(s.data()), query: orders };
  }],
  ["transforms", async () => {
    const ref = db.doc("products/prod-002");
    await get("products/prod-002");
    await ref.update({ touchedAt: FieldValue.serverTimestamp(), stock: FieldValue.increment(2),
      price: FieldValue.increment(0.25), views: FieldValue.increment(1),
      tags: FieldValue.arrayUnion("transformed", "local") });
    const a = await get("products/prod-002");
    await ref.update({ tags: FieldValue.arrayRemove("transformed") });
    if (!a.data.touchedAt) throw new Error("serverTimestamp did not set touchedAt");
    return [a, await get("products/prod-002")];
  }],
  ["batch", async () => {
    const paths = ["products/batch-1", "products/prod-003", "farmers/farmer-02", "products/prod-004",
      "farmers/farmer-02/products/prod-002"];
    const before = [];
    for (const p of paths) before.push(await get(p));
    const b = db.batch();
    b.set(db.doc(paths[0]), { name: "Batched", price: 2 });
    b.set(db.doc(paths[1]), { name: "Replaced" });
    b.update(db.doc(paths[2]), { rating: 4.9 });
    b.delete(db.doc(paths[3]));
    b.set(db.doc(paths[4]), { stock: 0 }, { merge: true });
    const results = await b.commit();
    const after = [];
    for (const p of paths) after.push(await get(p));
    return { results: results.length, before, after };
  }],
  ["bulkWriter", async () => {
    const w = db.bulkWriter();
    for (let i = 0; i < 5; i++) w.set(db.doc(`products/bulk-${i}`), { name: `Bulk ${i}`, price: i });
    w.delete(db.doc("products/prod-005"));
    await w.close();
    return docs(db.collection("products").where("name", ">=", "Bulk ").where("name", "<", "Bulk~").orderBy("name"));
  }],
  ["transaction: 3 concurrent increments of one counter", async () => {
    const ref = db.doc("products/counter");
    await ref.set({ n: 0 });
    await get("products/counter");
    await Promise.all([1, 2, 3].map(() => db.runTransaction(async (tx) => {
      const s = await tx.get(ref);
      tx.set(ref, { n: s.data().n + 1 });
    }, { maxAttempts: 50 })));
    const s = await get("products/counter");
    if (s.data.n.number !== 3) throw new Error(`counter after 3 increments: ${JSON.stringify(s.data.n)}`);
    return s;
  }],
  ["transaction reads, queries and writes; a failed one changes nothing", async () => {
    const seen = await db.runTransaction(async (tx) => {
      const f = await tx.get(db.doc("farmers/farmer-03"));
      const nobody = await tx.get(db.doc("farmers/nobody"));
      const q = await tx.get(db.collection("farmers/farmer-03/products").orderBy("name").limit(2));
      if (!f.exists || nobody.exists) throw new Error("transaction read");
      tx.update(f.ref, { visited: true });
      return q.docs.map(snap);
    });
    const failed = await code(db.runTransaction(async (tx) => {
      tx.update(db.doc("farmers/nobody"), { x: 1 });
    }, { maxAttempts: 1 }));
    const readOnly = await db.runTransaction(async (tx) => snap(await tx.get(db.doc("farmers/farmer-03"))), { readOnly: true });
    return { seen, after: await get("farmers/farmer-03"), failedTx: failed, nobody: await get("farmers/nobody"), readOnly };
  }],
  ["queries with every operator", async () => {
    const p = db.collection("products");
    const f1 = p.where("farmerId", "==", "farmer-01");
    const cheap = p.where("price", "<", 4);
    return nonEmpty({
      "==": () => docs(p.where("category", "==", "honey")),
      "!=": () => docs(cheap.where("category", "!=", "fruit")),
      "<": () => docs(f1.where("price", "<", 5)),
      "<=": () => docs(f1.where("price", "<=", 5)),
      ">": () => docs(f1.where("price", ">", 15)),
      ">=": () => docs(f1.where("stock", ">=", 150)),
      "array-contains": () => docs(p.where("tags", "array-contains", "local")),
      "array-contains-any": () => docs(cheap.where("tags", "array-contains-any", ["vegan", "bulk"])),
      "in": () => docs(cheap.where("category", "in", ["eggs", "honey"])),
      "not-in": () => docs(cheap.where("category", "not-in", ["fruit", "dairy", "eggs"])),
      "select": () => docs(p.where("category", "==", "eggs").select("name")),
    });
  }],
  ["orderBy, limit, limitToLast, offset and cursors", async () => {
    const p = db.collection("products");
    const q = db.collection("farmers/farmer-05/products").orderBy("price");
    const all = (await q.get()).docs;
    if (all.length < 10) throw new Error(`cursor base query: ${all.length} documents`);
    const mid = all[Math.floor(all.length / 2)];
    return nonEmpty({
      "price desc limit 5": () => docs(p.orderBy("price", "desc").limit(5)),
      "two orders": () => docs(p.orderBy("category").orderBy("price", "desc").limit(7)),
      "limitToLast 3": () => docs(p.orderBy("price").limitToLast(3)),
      "offset": () => docs(p.orderBy("price").offset(3).limit(2)),
      "by document id": () => docs(p.orderBy(FieldPath.documentId()).limit(4)),
      "startAt value": () => docs(q.startAt(mid.get("price")).limit(3)),
      "startAfter snapshot": () => docs(q.startAfter(mid).limit(3)),
      "endBefore snapshot": () => docs(q.endBefore(mid)),
      "between values": () => docs(q.startAfter(all[2].get("price")).endAt(all[6].get("price"))),
    });
  }],
  ["collectionGroup queries", async () => nonEmpty({
    "products of farmer-02": () => docs(db.collectionGroup("products").where("farmerId", "==", "farmer-02").orderBy("price")),
    "orders placed": () => docs(db.collectionGroup("orders").where("status", "==", "placed").orderBy("total", "desc").limit(10)),
  })],
  ["count, sum and average", async () => {
    const out = {};
    const qs = {
      fruit: db.collection("products").where("category", "==", "fruit"),
      farmer: db.collection("farmers/farmer-06/products"),
      group: db.collectionGroup("products").where("organic", "==", true),
      empty: db.collection("products").where("category", "==", "none"),
    };
    const agg = (q) => q.aggregate({ n: AggregateField.count(), s: AggregateField.sum("price"), a: AggregateField.average("price") }).get();
    for (const name of Object.keys(qs).sort()) {
      out[name] = [(await qs[name].count().get()).data(), (await agg(qs[name])).data()];
    }
    await db.doc("products/agg-extra").set({ category: "fruit", price: 100 });
    out["fruit after write"] = (await agg(qs.fruit)).data();
    return out;
  }],
  ["listCollections and listDocuments", async () => {
    const top = (await db.listCollections()).map((c) => c.id).sort();
    const sub = (await db.doc("farmers/farmer-01").listCollections()).map((c) => c.id).sort();
    const refs = (await db.collection("users/user-01/orders").listDocuments()).map((r) => sansAutoId(r.path)).sort();
    return { top, sub, refs };
  }],
  ["error codes", async () => {
    const out = {};
    out["update missing"] = await expectCode(db.doc("products/missing").update({ x: 1 }), NOT_FOUND);
    const b = db.batch();
    b.set(db.doc("products/batch-err"), { x: 1 });
    b.update(db.doc("products/missing"), { x: 1 });
    out["batch with update of missing"] = await expectCode(b.commit(), NOT_FOUND);
    out["reserved id"] = await expectCode(db.doc("products/__reserved__").set({ x: 1 }), INVALID_ARGUMENT);
    out["inequality on two fields without index"] = await code(db.collection("products").where("price", ">", 1).where("stock", ">", 1).get());
    out["stale update precondition"] = await expectCode(
      db.doc("products/prod-001").update({ x: 1 }, { lastUpdateTime: Timestamp.fromMillis(1000) }), FAILED_PRECONDITION);
    out["after"] = [await get("products/batch-err"), await get("products/missing"), await get("products/prod-001")];
    return out;
  }],
  ["reads see the writes before them", async () => {
    const q = db.collection("products").where("category", "==", "herbs").orderBy("price").limit(3);
    const g = db.collectionGroup("products").where("category", "==", "herbs").orderBy("price").limit(3);
    const steps = [];
    const look = async () => steps.push([await docs(q), await docs(g), await get("products/prod-007"),
      await get("farmers/farmer-07/products/prod-007"), (await q.count().get()).data(),
      (await db.getAll(db.doc("products/prod-007"), db.doc("farmers/farmer-07/products/prod-007"))).map(snap)]);
    await look();
    for (const p of ["products/prod-007", "farmers/farmer-07/products/prod-007"]) {
      await db.doc(p).update({ price: 0.01 });
      await look();
    }
    await db.doc("products/prod-007").delete();
    await look();
    await other.doc("products/prod-007").set({ category: "herbs", price: 0.02, name: "Written by another app" });
    await look();
    return steps;
  }],
  ["onSnapshot sees a later write", async () => {
    const ref = db.doc("products/snap-1");
    const q = db.collection("farmers/farmer-08/products").orderBy("name");
    const initialDoc = await until((next, err) => ref.onSnapshot(next, err), () => true, "document listener");
    const initialQuery = await until((next, err) => q.onSnapshot(next, err), () => true, "query listener");
    // Listen again and wait for the writes of another app instance to arrive.
    const docSeen = until((next, err) => ref.onSnapshot(next, err), (s) => s.exists, "document listener");
    const querySeen = until((next, err) => q.onSnapshot(next, err),
      (s) => s.docs.some((d) => d.id === "snap-new"), "query listener");
    await other.doc("products/snap-1").set({ name: "Snapped", price: 1 });
    await other.doc("farmers/farmer-08/products/snap-new").set({ name: "A new one", price: 2 });
    const [d, qs] = await Promise.all([docSeen, querySeen]);
    return {
      initialDoc: snap(initialDoc),
      initialQuery: initialQuery.docs.map(snap),
      doc: snap(d),
      query: qs.docs.map(snap),
      changes: qs.docChanges().map((c) => [c.type, c.doc.ref.path]).filter(([, p]) => p.endsWith("/snap-new")),
    };
  }],
  ["values of every type round-trip", async () => {
    const v = { negZero: -0, nan: NaN, inf: -Infinity, big: 2 ** 53 - 1, small: 5e-324, s: "", empty: {}, list: [] };
    await db.doc("products/types").set(v);
    return get("products/types");
  }],
];

await runAll(scenarios);

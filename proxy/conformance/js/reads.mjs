// Makes one fixed set of cacheable reads over gRPC and prints their normalised answers
// as one JSON object. proxy/conformance runs it twice through the proxy, in two
// processes (two gRPC connections, as two server instances of an app would), and
// requires the second run to answer the same without reaching the upstream.
//
// Usage: node reads.mjs admin|fullsdk HOST:PORT PROJECT_ID
//   admin:   firebase-admin with its defaults and FIRESTORE_EMULATOR_HOST:
//            BatchGetDocuments (its get and getAll), RunQuery, RunAggregationQuery and
//            ListCollectionIds below a document the sample rules cache. Not here: its
//            listDocuments (ListDocuments with show_missing, which no rule can cache:
//            missing documents appear when anything is written below them) and
//            listCollections at the root (the sample's catch-all rule has ttl 0), and
//            collection-group queries (cached only as strictly as every rule that could
//            match one of their documents, and the catch-all's ttl 0 is among them).
//   fullsdk: `firebase/firestore` under Node: its plain reads ride the Listen stream
//            (not a cacheable read), so only what it sends as unary reads:
//            RunAggregationQuery (getCountFromServer, getAggregateFromServer).

import { args, normMap, snap } from "./common.mjs";

// The first argument picks the client; args reads the rest as the other scripts do.
const [which] = process.argv.splice(2, 1);
const { addr, host, port, projectId } = args("node reads.mjs admin|fullsdk HOST:PORT PROJECT_ID");

const out = {};
if (which === "admin") {
  process.env.FIRESTORE_EMULATOR_HOST = addr;
  process.env.GOOGLE_CLOUD_PROJECT = projectId;
  process.env.METADATA_SERVER_DETECTION ??= "none";
  const { initializeApp } = await import("firebase-admin/app");
  const { getFirestore, AggregateField } = await import("firebase-admin/firestore");
  const db = getFirestore(initializeApp());
  const q = db.collection("products").where("category", "==", "honey").orderBy("price");
  out.get = snap(await db.doc("products/prod-010").get());
  out.getAll = (await db.getAll(db.doc("farmers/farmer-01"), db.doc("products/prod-011"), db.doc("products/nope"))).map(snap);
  out.query = (await q.get()).docs.map(snap);
  out.count = (await q.count().get()).data();
  out.aggregate = (await q.aggregate({ s: AggregateField.sum("price"), a: AggregateField.average("price") }).get()).data();
  out.collections = (await db.doc("farmers/farmer-01").listCollections()).map((c) => c.id).sort();
} else if (which === "fullsdk") {
  const { initializeApp } = await import("firebase/app");
  const { getFirestore, connectFirestoreEmulator, collection, query, where, getCountFromServer, getAggregateFromServer, sum, average } =
    await import("firebase/firestore");
  const db = getFirestore(initializeApp({ projectId, apiKey: "conformance-api-key", appId: "conformance" }));
  connectFirestoreEmulator(db, host, port);
  const q = query(collection(db, "products"), where("category", "==", "honey"));
  out.count = (await getCountFromServer(q)).data();
  out.aggregate = normMap((await getAggregateFromServer(q, { s: sum("price"), a: average("price") })).data());
} else {
  console.error("usage: node reads.mjs admin|fullsdk HOST:PORT PROJECT_ID");
  process.exit(2);
}
process.stdout.write(JSON.stringify(out) + "\n", () => process.exit(0));

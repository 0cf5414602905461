// The page's entry for the full SDK (firebase/firestore: reads and writes on the
// WebChannel Listen and Write channels, transactions and aggregations over REST).
import { initializeApp } from "firebase/app";
import * as fs from "firebase/firestore";
import { install } from "./scenarios.mjs";

install("full", initializeApp, fs);

// The page's entry for the lite SDK (firebase/firestore/lite: REST only, fetch with
// Content-Type text/plain).
import { initializeApp } from "firebase/app";
import * as fs from "firebase/firestore/lite";
import { install } from "./scenarios.mjs";

install("lite", initializeApp, fs);

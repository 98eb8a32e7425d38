// Checks an audit entry's inclusion proof in this browser, trusting
// neither the console nor the broker: RFC 6962 hashing with WebCrypto
// SHA-256 (leaf = SHA-256(0x00 || entry), node = SHA-256(0x01 || left ||
// right)), the RFC 9162 inclusion check against the checkpoint's root, and
// the checkpoint's Ed25519 signature (C2SP signed note) where WebCrypto has
// Ed25519.
"use strict";
(function () {
  const out = document.getElementById("proof-result");
  const path = document.getElementById("proof-path");
  const text = document.getElementById("proof-json");
  const fetchButton = document.getElementById("proof-fetch");
  const checkButton = document.getElementById("proof-check");
  if (!out || !text) return;
  const say = (key) => out.dataset[key] || key;

  const hex = (bytes) => Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
  const unhex = (s) => {
    if (typeof s !== "string" || !/^([0-9a-f]{2})*$/i.test(s)) throw new Error("not hex: " + s);
    const out = new Uint8Array(s.length / 2);
    for (let i = 0; i < out.length; i++) out[i] = parseInt(s.substr(i * 2, 2), 16);
    return out;
  };
  const unbase64 = (s) => Uint8Array.from(atob(s), (c) => c.charCodeAt(0));
  const concat = (...parts) => {
    const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
    let at = 0;
    for (const p of parts) { out.set(p, at); at += p.length; }
    return out;
  };
  const sha256 = async (bytes) => new Uint8Array(await crypto.subtle.digest("SHA-256", bytes));
  const node = (left, right) => sha256(concat(Uint8Array.of(1), left, right));

  // RFC 9162 §2.1.3.2
  async function rootFromInclusion(leaf, index, size, proof, steps) {
    if (!(index < size)) throw new Error("index " + index + " is not below tree size " + size);
    let fn = index, sn = size - 1, r = leaf;
    for (const p of proof) {
      if (sn === 0) throw new Error("proof is too long");
      if (fn % 2 === 1 || fn === sn) {
        r = await node(p, r);
        steps.push("H(0x01 ‖ " + hex(p).slice(0, 16) + "… ‖ ·) = " + hex(r));
        if (fn % 2 === 0) { while (fn % 2 === 0 && fn !== 0) { fn = Math.floor(fn / 2); sn = Math.floor(sn / 2); } }
      } else {
        r = await node(r, p);
        steps.push("H(0x01 ‖ · ‖ " + hex(p).slice(0, 16) + "…) = " + hex(r));
      }
      fn = Math.floor(fn / 2); sn = Math.floor(sn / 2);
    }
    if (sn !== 0) throw new Error("proof is too short");
    return r;
  }

  // C2SP signed note: the text up to and including the newline before the
  // blank line is signed; "— name base64(keyid[4] ‖ signature[64])" lines follow.
  async function checkSignature(note, vkey) {
    if (!vkey) return say("sigNokey");
    // name+keyid+base64: the base64 may itself hold "+"
    const parts = vkey.split("+");
    const [name, id, material] = [parts[0], parts[1], parts.slice(2).join("+")];
    const raw = unbase64(material);
    if (raw.length !== 33 || raw[0] !== 1) throw new Error("the verifier key is not an Ed25519 key");
    const split = note.lastIndexOf("\n\n");
    if (split < 0) throw new Error("the checkpoint has no signature lines");
    const signed = new TextEncoder().encode(note.slice(0, split + 1));
    const lines = note.slice(split + 2).split("\n").filter((l) => l.startsWith("— "));
    const sig = lines.map((l) => l.slice(2).split(" ")).find(([n, s]) => n === name && s && hex(unbase64(s).slice(0, 4)) === id);
    if (!sig) throw new Error("no signature by " + name + " on the checkpoint");
    let key;
    try {
      key = await crypto.subtle.importKey("raw", raw.slice(1), { name: "Ed25519" }, false, ["verify"]);
    } catch (e) {
      return say("sigUnsupported");
    }
    const ok = await crypto.subtle.verify({ name: "Ed25519" }, key, unbase64(sig[1]).slice(4), signed);
    if (!ok) throw new Error(say("sigBad"));
    return say("sigOk") + " (" + name + ")";
  }

  async function check(proof) {
    const steps = [];
    const canonical = unbase64(proof.canonical_base64);
    const entrySha = hex(await sha256(canonical));
    if (entrySha !== proof.entry_sha256) throw new Error("SHA-256 of the entry is " + entrySha + ", not " + proof.entry_sha256);
    const leaf = await sha256(concat(Uint8Array.of(0), canonical));
    steps.push(say("leaf") + " H(0x00 ‖ entry) = " + hex(leaf));
    const hashes = proof.hashes.map(unhex);
    const root = await rootFromInclusion(leaf, proof.seq, proof.tree_size, hashes, steps);
    steps.push(say("root") + " " + hex(root));
    const cp = proof.checkpoint;
    const body = cp.note.split("\n");
    const noteSize = Number(body[1]);
    const noteRoot = hex(unbase64(body[2] || ""));
    if (noteSize !== proof.tree_size) throw new Error("the checkpoint is for size " + noteSize + ", the proof for " + proof.tree_size);
    if (noteRoot !== hex(root)) throw new Error("the computed root " + hex(root) + " is not the checkpoint's " + noteRoot);
    const sig = await checkSignature(cp.note, proof.verifier_key);
    return { steps, sig };
  }

  async function run(json) {
    out.className = "proof-result";
    out.textContent = "…";
    path.textContent = "";
    try {
      const { steps, sig } = await check(JSON.parse(json));
      out.className = "proof-result pass";
      out.textContent = say("pass") + " " + sig;
      for (const s of steps) {
        const li = document.createElement("li");
        li.textContent = s;
        path.appendChild(li);
      }
    } catch (e) {
      out.className = "proof-result fail";
      out.textContent = say("fail") + " " + e.message;
    }
  }

  fetchButton.addEventListener("click", async () => {
    const response = await fetch(fetchButton.dataset.url, { credentials: "same-origin" });
    const body = await response.text();
    text.value = response.ok ? JSON.stringify(JSON.parse(body), null, 2) : body;
    if (!response.ok) {
      out.className = "proof-result fail";
      out.textContent = say("fail") + " " + body;
      return;
    }
    await run(text.value);
  });
  checkButton.addEventListener("click", () => run(text.value));
  out.textContent = "";
})();

// AES-GCM (NIST SP 800-38D, 96-bit IV, 128-bit tag, no additional data) in plain JavaScript, for a page that is
// not a secure context: over plain HTTP to a host other than localhost the browser gives no WebCrypto
// (crypto.subtle), while crypto.getRandomValues stays. console.js keeps the text typed into a decision's form with
// it there, in the same format as WebCrypto's AES-GCM (ciphertext, then the tag): an entry written by either is
// read by the other. Checked against Python's cryptography and the browser's own WebCrypto
// (tests/e2e/test_console_typed_text_plain_http_browser.py). Table lookups: not constant-time, which matters
// to no one here (what it protects is text at rest in the browser's storage, not a live secret an attacker
// can time).
(function () {
  "use strict";
  const SBOX = new Uint8Array(256);
  (function makeSbox() { // the multiplicative inverse in GF(2^8), then the affine map (FIPS 197, 5.1.1)
    const rotl8 = (x, s) => ((x << s) | (x >>> (8 - s))) & 0xff;
    let p = 1, q = 1;
    do {
      p = (p ^ (p << 1) ^ (p & 0x80 ? 0x1b : 0)) & 0xff; // p * 3
      q = (q ^ (q << 1)) & 0xff; // q / 3
      q = (q ^ (q << 2)) & 0xff;
      q = (q ^ (q << 4)) & 0xff;
      if (q & 0x80) q ^= 0x09;
      SBOX[p] = (q ^ rotl8(q, 1) ^ rotl8(q, 2) ^ rotl8(q, 3) ^ rotl8(q, 4) ^ 0x63) & 0xff;
    } while (p !== 1);
    SBOX[0] = 0x63;
  })();
  const xtime = (x) => ((x << 1) ^ (x & 0x80 ? 0x1b : 0)) & 0xff;

  function expandKey(key) { // the round keys, as 4 * (rounds + 1) 32-bit words
    const nk = key.length / 4;
    if (![4, 6, 8].includes(nk)) throw new Error("an AES key is 16, 24 or 32 bytes");
    const words = new Uint32Array(4 * (nk + 7));
    for (let i = 0; i < nk; i++) {
      words[i] = ((key[4 * i] << 24) | (key[4 * i + 1] << 16) | (key[4 * i + 2] << 8) | key[4 * i + 3]) >>> 0;
    }
    const sub = (w) => ((SBOX[w >>> 24] << 24) | (SBOX[(w >>> 16) & 0xff] << 16) | (SBOX[(w >>> 8) & 0xff] << 8)
      | SBOX[w & 0xff]) >>> 0;
    let rcon = 1;
    for (let i = nk; i < words.length; i++) {
      let t = words[i - 1];
      if (i % nk === 0) {
        t = (sub(((t << 8) | (t >>> 24)) >>> 0) ^ (rcon << 24)) >>> 0;
        rcon = xtime(rcon);
      } else if (nk > 6 && i % nk === 4) {
        t = sub(t);
      }
      words[i] = (words[i - nk] ^ t) >>> 0;
    }
    return words;
  }

  function encryptBlock(words, input) { // one 16-byte block (the state column by column, as the bytes come)
    const rounds = words.length / 4 - 1;
    const s = Uint8Array.from(input);
    const t = new Uint8Array(16);
    const addRoundKey = (round) => {
      for (let c = 0; c < 4; c++) {
        const w = words[4 * round + c];
        s[4 * c] ^= w >>> 24;
        s[4 * c + 1] ^= (w >>> 16) & 0xff;
        s[4 * c + 2] ^= (w >>> 8) & 0xff;
        s[4 * c + 3] ^= w & 0xff;
      }
    };
    const subShift = () => { // SubBytes and ShiftRows: row r moves left by r
      for (let c = 0; c < 4; c++) {
        for (let r = 0; r < 4; r++) t[r + 4 * c] = SBOX[s[r + 4 * ((c + r) % 4)]];
      }
      s.set(t);
    };
    addRoundKey(0);
    for (let round = 1; round < rounds; round++) {
      subShift();
      for (let c = 0; c < 4; c++) { // MixColumns
        const a0 = s[4 * c], a1 = s[4 * c + 1], a2 = s[4 * c + 2], a3 = s[4 * c + 3];
        const all = a0 ^ a1 ^ a2 ^ a3;
        s[4 * c] = a0 ^ all ^ xtime(a0 ^ a1);
        s[4 * c + 1] = a1 ^ all ^ xtime(a1 ^ a2);
        s[4 * c + 2] = a2 ^ all ^ xtime(a2 ^ a3);
        s[4 * c + 3] = a3 ^ all ^ xtime(a3 ^ a0);
      }
      addRoundKey(round);
    }
    subShift();
    addRoundKey(rounds);
    return s;
  }

  function gmul(x, y) { // x * y in GF(2^128), as GCM defines it (bit 0 the most significant of byte 0)
    let z0 = 0, z1 = 0, z2 = 0, z3 = 0;
    let v0 = y[0], v1 = y[1], v2 = y[2], v3 = y[3];
    for (let i = 0; i < 128; i++) {
      if ((x[i >>> 5] >>> (31 - (i & 31))) & 1) {
        z0 ^= v0; z1 ^= v1; z2 ^= v2; z3 ^= v3;
      }
      const carry = v3 & 1;
      v3 = ((v3 >>> 1) | (v2 << 31)) >>> 0;
      v2 = ((v2 >>> 1) | (v1 << 31)) >>> 0;
      v1 = ((v1 >>> 1) | (v0 << 31)) >>> 0;
      v0 = v0 >>> 1;
      if (carry) v0 = (v0 ^ 0xe1000000) >>> 0;
    }
    return [z0 >>> 0, z1 >>> 0, z2 >>> 0, z3 >>> 0];
  }

  const toWords = (b, at) => [0, 1, 2, 3].map((i) =>
    (((b[at + 4 * i] || 0) << 24) | ((b[at + 4 * i + 1] || 0) << 16) | ((b[at + 4 * i + 2] || 0) << 8)
      | (b[at + 4 * i + 3] || 0)) >>> 0);

  function ghash(h, data) { // GHASH of the ciphertext (no additional data), with the lengths block
    let y = [0, 0, 0, 0];
    const blocks = Math.ceil(data.length / 16);
    for (let b = 0; b < blocks; b++) {
      const end = Math.min(16, data.length - 16 * b);
      const block = new Uint8Array(16);
      block.set(data.subarray(16 * b, 16 * b + end));
      const x = toWords(block, 0);
      y = gmul([y[0] ^ x[0], y[1] ^ x[1], y[2] ^ x[2], y[3] ^ x[3]], h);
    }
    const bits = data.length * 8;
    return gmul([y[0], y[1], y[2] ^ Math.floor(bits / 0x100000000), (y[3] ^ bits) >>> 0], h);
  }

  function ctr(words, j0, data) { // the data XOR the key stream from inc32(J0)
    const out = new Uint8Array(data.length);
    const counter = Uint8Array.from(j0);
    let n = ((j0[12] << 24) | (j0[13] << 16) | (j0[14] << 8) | j0[15]) >>> 0;
    for (let at = 0; at < data.length; at += 16) {
      n = (n + 1) >>> 0;
      counter[12] = n >>> 24; counter[13] = (n >>> 16) & 0xff; counter[14] = (n >>> 8) & 0xff; counter[15] = n & 0xff;
      const stream = encryptBlock(words, counter);
      for (let i = 0; i < 16 && at + i < data.length; i++) out[at + i] = data[at + i] ^ stream[i];
    }
    return out;
  }

  function tagOf(words, j0, ciphertext) {
    const s = ghash(toWords(encryptBlock(words, new Uint8Array(16)), 0), ciphertext);
    const e = encryptBlock(words, j0);
    const tag = new Uint8Array(16);
    for (let i = 0; i < 16; i++) tag[i] = e[i] ^ ((s[i >>> 2] >>> (24 - 8 * (i & 3))) & 0xff);
    return tag;
  }

  function setup(key, iv) {
    if (iv.length !== 12) throw new Error("the IV is 12 bytes");
    const j0 = new Uint8Array(16);
    j0.set(iv);
    j0[15] = 1;
    return [expandKey(key), j0];
  }

  // encrypt(key, iv, plaintext): the ciphertext and its 16-byte tag, as WebCrypto's AES-GCM gives them.
  function encrypt(key, iv, plaintext) {
    const [words, j0] = setup(key, iv);
    const ciphertext = ctr(words, j0, plaintext);
    const out = new Uint8Array(ciphertext.length + 16);
    out.set(ciphertext);
    out.set(tagOf(words, j0, ciphertext), ciphertext.length);
    return out;
  }

  // decrypt(key, iv, data): the plaintext, or null when the tag does not match (another key, or damaged).
  function decrypt(key, iv, data) {
    if (data.length < 16) return null;
    const [words, j0] = setup(key, iv);
    const ciphertext = data.subarray(0, data.length - 16);
    const tag = tagOf(words, j0, ciphertext);
    let differ = 0;
    for (let i = 0; i < 16; i++) differ |= tag[i] ^ data[ciphertext.length + i];
    return differ ? null : ctr(words, j0, ciphertext);
  }

  window.RadtraceAesGcm = Object.freeze({ encrypt, decrypt });
})();

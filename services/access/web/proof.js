// The sign-in puzzle (the account service's proof of work): while sign-in is busy, a
// browser without a device credential is asked for a text `CHALLENGE:SOLUTION` whose
// SHA-256 begins with `bits` zero bits. WebCrypto's digest is asynchronous per call,
// far too slow for tens of thousands of tries, so SHA-256 (FIPS 180-4) is computed here.

/** Round constants and initial state: fractional parts of cube and square roots of primes. */
function primes(n) {
  const found = [];
  for (let c = 2; found.length < n; c++) {
    if (found.every((p) => c % p !== 0)) found.push(c);
  }
  return found;
}
const frac32 = (x) => ((x - Math.floor(x)) * 0x100000000) >>> 0;
const K = Uint32Array.from(primes(64), (p) => frac32(Math.cbrt(p)));
const H0 = Uint32Array.from(primes(8), (p) => frac32(Math.sqrt(p)));

const rotr = (x, n) => (x >>> n) | (x << (32 - n));

/** The SHA-256 of `bytes` (a Uint8Array) as eight 32-bit words. */
export function sha256(bytes) {
  const blocks = Math.ceil((bytes.length + 9) / 64);
  const padded = new Uint8Array(blocks * 64);
  padded.set(bytes);
  padded[bytes.length] = 0x80;
  const view = new DataView(padded.buffer);
  const bitLength = bytes.length * 8;
  view.setUint32(padded.length - 8, Math.floor(bitLength / 0x100000000));
  view.setUint32(padded.length - 4, bitLength >>> 0);
  const h = Uint32Array.from(H0);
  const w = new Uint32Array(64);
  for (let block = 0; block < blocks; block++) {
    for (let i = 0; i < 16; i++) w[i] = view.getUint32(block * 64 + i * 4);
    for (let i = 16; i < 64; i++) {
      const s0 = rotr(w[i - 15], 7) ^ rotr(w[i - 15], 18) ^ (w[i - 15] >>> 3);
      const s1 = rotr(w[i - 2], 17) ^ rotr(w[i - 2], 19) ^ (w[i - 2] >>> 10);
      w[i] = (w[i - 16] + s0 + w[i - 7] + s1) >>> 0;
    }
    let [a, b, c, d, e, f, g, hh] = h;
    for (let i = 0; i < 64; i++) {
      const t1 =
        (hh + (rotr(e, 6) ^ rotr(e, 11) ^ rotr(e, 25)) + ((e & f) ^ (~e & g)) + K[i] + w[i]) >>> 0;
      const t2 = ((rotr(a, 2) ^ rotr(a, 13) ^ rotr(a, 22)) + ((a & b) ^ (a & c) ^ (b & c))) >>> 0;
      hh = g;
      g = f;
      f = e;
      e = (d + t1) >>> 0;
      d = c;
      c = b;
      b = a;
      a = (t1 + t2) >>> 0;
    }
    const next = [a, b, c, d, e, f, g, hh];
    for (let i = 0; i < 8; i++) h[i] = (h[i] + next[i]) >>> 0;
  }
  return h;
}

/** How many zero bits a digest (eight 32-bit words) begins with. */
export function leadingZeroBits(words) {
  let bits = 0;
  for (const word of words) {
    if (word === 0) {
      bits += 32;
    } else {
      return bits + Math.clz32(word);
    }
  }
  return bits;
}

/** The most bits this client works for (a few seconds at 22 in a browser). */
export const MAX_BITS = 22;

/**
 * The proof for `challenge`: `CHALLENGE:SOLUTION` with a hash of `bits` leading zero
 * bits. Yields to the page between batches of tries, so it stays responsive.
 */
export async function solve(challenge, bits) {
  if (!(bits <= MAX_BITS)) throw new Error(`the puzzle asks for ${bits} bits`);
  const encoder = new TextEncoder();
  for (let candidate = 0; ; candidate++) {
    const proof = `${challenge}:${candidate}`;
    if (leadingZeroBits(sha256(encoder.encode(proof))) >= bits) return proof;
    if (candidate % 20000 === 19999) await new Promise((r) => setTimeout(r, 0));
  }
}

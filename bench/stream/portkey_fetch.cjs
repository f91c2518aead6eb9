// Preloaded into the Portkey gateway (node --require): Portkey 1.15.2 on Node 20 appends its
// headers to the upstream's fetch Response, whose headers undici makes immutable, so every
// stream fails with "TypeError: immutable" (its npm package ships without the patches its
// postinstall would apply). A Response copy with mutable headers, once per request, avoids it.
const upstreamFetch = globalThis.fetch;
globalThis.fetch = async (...args) => {
  const response = await upstreamFetch(...args);
  return new Response(response.body, {
    status: response.status,
    statusText: response.statusText,
    headers: new Headers(response.headers),
  });
};

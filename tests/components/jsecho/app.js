// A wasi:http/proxy guest for jco + componentize-js (tests/support/components.py builds it).
// StarlingMonkey turns the component's incoming-handler export into a fetch event.
// Routes by the last segment of the path, so any route prefix works:
//   GET /...?q  -> 200 text: method, path with query and x-probe header, one per line
//   POST        -> 200, the request body echoed, content-type kept
//   /outgoing   -> tries an outgoing fetch; answers what happened
//   /spin       -> loops forever

async function handle(request) {
  const url = new URL(request.url);
  const route = "/" + url.pathname.replace(/\/+$/, "").split("/").pop();
  if (route === "/spin") {
    for (;;) {}
  }
  if (route === "/outgoing") {
    try {
      await fetch("https://example.com/");
      return new Response("sent");
    } catch (error) {
      return new Response(`refused: ${error.name}`);
    }
  }
  if (request.method === "POST") {
    const body = await request.arrayBuffer();
    const type = request.headers.get("content-type") || "application/octet-stream";
    return new Response(body, { headers: { "content-type": type } });
  }
  const lines = [request.method, url.pathname + url.search, request.headers.get("x-probe") || ""];
  return new Response(lines.join("\n") + "\n", {
    headers: { "content-type": "text/plain", "x-guest": "componentize-js" },
  });
}

addEventListener("fetch", (event) => event.respondWith(handle(event.request)));

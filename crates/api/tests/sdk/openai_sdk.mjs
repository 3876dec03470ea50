// The official OpenAI Node SDK against Gatewayz, changing only baseURL and
// apiKey. Run by crates/api/tests/api/sdk.rs with GATEWAYZ_URL and
// GATEWAYZ_KEY set; exits non-zero on the first failed check.
import assert from "node:assert/strict";
import OpenAI from "openai";

const baseURL = `${process.env.GATEWAYZ_URL}/v1`;
const apiKey = process.env.GATEWAYZ_KEY;
const messages = [{ role: "user", content: "Hello SDK" }];
const client = new OpenAI({ baseURL, apiKey, maxRetries: 0 });

// The catalog, as a model list.
const ids = [];
for await (const model of client.models.list()) ids.push(model.id);
assert.ok(ids.includes("demo-1") && ids.includes("gpt-4o-mini"), ids.join(","));
assert.equal((await client.models.retrieve("demo-1")).owned_by, "demo");

// A completion by catalog id, with its cost.
let completion = await client.chat.completions.create({ model: "demo-1", messages });
assert.equal(completion.choices[0].message.content, "You said: Hello SDK");
assert.ok(completion.gateway_usage.cost_usd > 0, JSON.stringify(completion));

// A stream by catalog id.
let text = "";
let last;
const stream = await client.chat.completions.create({ model: "demo-1", messages, stream: true });
for await (const chunk of stream) {
  if (chunk.choices.length) text += chunk.choices[0].delta.content ?? "";
  last = chunk;
}
assert.equal(text, "You said: Hello SDK");
assert.ok(last.gateway_usage.cost_usd > 0, JSON.stringify(last));

// The @provider/model syntax, through Portkey, with nothing extra.
completion = await client.chat.completions.create({ model: "@openai/gpt-4o-mini", messages });
assert.equal(completion.choices[0].message.content, "Hello from Portkey");

// A stream by @provider/model.
text = "";
for await (const chunk of await client.chat.completions.create({
  model: "@openai/gpt-4o-mini",
  messages,
  stream: true,
})) {
  if (chunk.choices.length) text += chunk.choices[0].delta.content ?? "";
  last = chunk;
}
assert.equal(text, "Hello from Portkey");
assert.ok(last.gateway_usage.upstream_ms >= 0 && !last.usage, JSON.stringify(last));

// A catalog id that routes to Portkey, with nothing extra: priced by the catalog.
completion = await client.chat.completions.create({ model: "gpt-4o-mini", messages });
assert.equal(completion.choices[0].message.content, "Hello from Portkey");
assert.equal(completion.gateway_usage.cost_usd, 0.000002);

// Explicit routing as extra body fields.
completion = await client.chat.completions.create({
  model: "gpt-4o-mini",
  messages,
  provider: "portkey",
  portkey_provider: "openai",
});
assert.equal(completion.choices[0].message.content, "Hello from Portkey");

// Errors surface as the SDK's typed exceptions.
await assert.rejects(
  new OpenAI({ baseURL, apiKey: "wrong-key", maxRetries: 0 }).models.list(),
  OpenAI.AuthenticationError,
);
await assert.rejects(
  client.chat.completions.create({ model: "@openai/rate-limited", messages }),
  (error) => error instanceof OpenAI.RateLimitError && error.headers.get("retry-after") === "9",
);
await assert.rejects(
  client.chat.completions.create({ model: "no-such-model", messages }),
  OpenAI.NotFoundError,
);

console.log("node openai", OpenAI.VERSION ?? "", ": all checks passed");

"""The official OpenAI Python SDK against Gatewayz, changing only base_url and api_key.

Run by crates/api/tests/api/sdk.rs with GATEWAYZ_URL and GATEWAYZ_KEY set;
exits non-zero on the first failed check.
"""

import os

import openai
from openai import OpenAI

BASE_URL = os.environ["GATEWAYZ_URL"] + "/v1"
KEY = os.environ["GATEWAYZ_KEY"]
MESSAGES = [{"role": "user", "content": "Hello SDK"}]

client = OpenAI(base_url=BASE_URL, api_key=KEY, max_retries=0)

# The catalog, as a model list.
ids = [model.id for model in client.models.list()]
assert "demo-1" in ids and "gpt-4o-mini" in ids, ids
assert client.models.retrieve("demo-1").owned_by == "demo"

# A completion by catalog id, with its cost.
completion = client.chat.completions.create(model="demo-1", messages=MESSAGES)
assert completion.choices[0].message.content == "You said: Hello SDK", completion
usage = completion.model_extra["gateway_usage"]
assert usage["cost_usd"] > 0 and usage["request_ms"] >= usage["upstream_ms"], usage

# A stream by catalog id.
text = ""
final = None
for chunk in client.chat.completions.create(model="demo-1", messages=MESSAGES, stream=True):
    if chunk.choices:
        text += chunk.choices[0].delta.content or ""
    final = chunk
assert text == "You said: Hello SDK", text
assert final.model_extra["gateway_usage"]["cost_usd"] > 0, final

# The @provider/model syntax, through Portkey, with no extra_body.
completion = client.chat.completions.create(model="@openai/gpt-4o-mini", messages=MESSAGES)
assert completion.choices[0].message.content == "Hello from Portkey", completion

# A stream by @provider/model: the client did not ask for usage, so it gets
# none, but the last chunk still carries the gateway's usage.
text = ""
final = None
for chunk in client.chat.completions.create(model="@openai/gpt-4o-mini", messages=MESSAGES, stream=True):
    if chunk.choices:
        text += chunk.choices[0].delta.content or ""
    final = chunk
assert text == "Hello from Portkey", text
assert final.usage is None and "upstream_ms" in final.model_extra["gateway_usage"], final

# A catalog id that routes to Portkey, with nothing extra: priced by the catalog.
completion = client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
assert completion.choices[0].message.content == "Hello from Portkey", completion
assert completion.model_extra["gateway_usage"]["cost_usd"] == 0.000002, completion.model_extra

# Explicit routing through extra_body.
completion = client.chat.completions.create(
    model="gpt-4o-mini",
    messages=MESSAGES,
    extra_body={"provider": "portkey", "portkey_provider": "openai"},
)
assert completion.choices[0].message.content == "Hello from Portkey", completion

# Errors surface as the SDK's typed exceptions.
def raises(kind, call):
    try:
        call()
    except kind as error:
        return error
    raise AssertionError(f"expected {kind.__name__}")

raises(
    openai.AuthenticationError,
    lambda: OpenAI(base_url=BASE_URL, api_key="wrong-key", max_retries=0).models.list(),
)
limited = raises(
    openai.RateLimitError,
    lambda: client.chat.completions.create(model="@openai/rate-limited", messages=MESSAGES),
)
assert limited.response.headers["retry-after"] == "9", limited.response.headers
raises(
    openai.NotFoundError,
    lambda: client.chat.completions.create(model="no-such-model", messages=MESSAGES),
)

print("python openai", openai.__version__, ": all checks passed")

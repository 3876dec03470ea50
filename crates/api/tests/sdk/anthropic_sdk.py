"""The official Anthropic Python SDK against Gatewayz's Messages API, changing
only base_url and api_key (the SDK appends /v1/messages itself).

This SDK sends its key as `Authorization: Bearer`; earlier ones, and
Anthropic's own examples, send `x-api-key`: both are checked.

Run by crates/api/tests/api/sdk_endpoints.rs, against the demo provider and
through the real Portkey gateway, with these variables set:

  GATEWAYZ_URL, GATEWAYZ_KEY  where the gateway is, and a key it accepts
  MESSAGES_MODEL              a model that serves /v1/messages
  PRICED                      "1" when the catalog prices MESSAGES_MODEL
  EXPECT_UPSTREAM_SAW         "1" when the upstream is gatewayz-upstream, which
                              says which anthropic-* headers reached it; the
                              Messages API of an OpenAI model (translated to
                              chat completions by the gateway) is checked too

Exits non-zero on the first failed check.
"""

import os

import anthropic
from anthropic import Anthropic

BASE_URL = os.environ["GATEWAYZ_URL"]
KEY = os.environ["GATEWAYZ_KEY"]
MODEL = os.environ["MESSAGES_MODEL"]
PRICED = os.environ.get("PRICED") == "1"
EXPECT_UPSTREAM_SAW = os.environ.get("EXPECT_UPSTREAM_SAW") == "1"
MESSAGES = [{"role": "user", "content": "Hello Claude SDK"}]
EXPECTED = "You said: Hello Claude SDK"

client = Anthropic(base_url=BASE_URL, api_key=KEY, max_retries=0)


def x_api_key_client(key):
    """A client that sends `key` as `x-api-key`, and no Authorization header."""
    return Anthropic(
        base_url=BASE_URL,
        api_key="unused",
        max_retries=0,
        default_headers={"Authorization": anthropic.omit, "X-Api-Key": key},
    )


def raises(kind, call):
    try:
        call()
    except kind as error:
        return error
    raise AssertionError(f"expected {kind.__name__}")


def check_gateway_usage(extra, where):
    usage = (extra or {}).get("gateway_usage")
    assert usage is not None, f"{where}: no gateway_usage in {extra}"
    assert usage["request_ms"] >= usage["upstream_ms"] >= 0, (where, usage)
    if PRICED:
        assert usage["cost_usd"] > 0, (where, usage)


# A whole message.
message = client.messages.create(model=MODEL, max_tokens=256, messages=MESSAGES)
assert message.type == "message" and message.role == "assistant", message
assert [block.type for block in message.content] == ["text"], message.content
assert message.content[0].text == EXPECTED, message.content
assert message.stop_reason == "end_turn", message.stop_reason
assert message.usage.input_tokens > 0 and message.usage.output_tokens > 0, message.usage
check_gateway_usage(message.model_extra, "messages.create")

# The anthropic-version the SDK sends, and an anthropic-beta, reach the
# provider.
raw = client.messages.with_raw_response.create(
    model=MODEL,
    max_tokens=256,
    messages=MESSAGES,
    extra_headers={"anthropic-beta": "token-efficient-tools-2025-02-19"},
)
beta = raw.parse()
assert beta.content[0].text == EXPECTED, beta.content
if EXPECT_UPSTREAM_SAW:
    assert beta.model_extra.get("upstream_saw") == {
        "anthropic_version": raw.http_request.headers["anthropic-version"],
        "anthropic_beta": "token-efficient-tools-2025-02-19",
    }, beta.model_extra

# The key as `x-api-key`.
raw = x_api_key_client(KEY).messages.with_raw_response.create(model=MODEL, max_tokens=256, messages=MESSAGES)
assert "authorization" not in raw.http_request.headers, raw.http_request.headers
assert raw.http_request.headers["x-api-key"] == KEY
assert raw.parse().content[0].text == EXPECTED, raw.parse()

# A stream: the SDK's helper joins the text deltas and builds the final
# message, whose usage comes from `message_start` and `message_delta`.
with client.messages.stream(model=MODEL, max_tokens=256, messages=MESSAGES) as stream:
    text = "".join(stream.text_stream)
    final = stream.get_final_message()
assert text == EXPECTED, text
assert final.content[0].text == EXPECTED and final.stop_reason == "end_turn", final
assert final.usage.input_tokens == message.usage.input_tokens, (final.usage, message.usage)
assert final.usage.output_tokens > 0, final.usage

# The raw events, read by `stream=True`: the gateway's usage rides on
# `message_delta`.
events = list(client.messages.create(model=MODEL, max_tokens=256, messages=MESSAGES, stream=True))
kinds = [event.type for event in events]
assert kinds[0] == "message_start" and kinds[-1] == "message_stop", kinds
delta = next(event for event in events if event.type == "message_delta")
check_gateway_usage(delta.model_extra, "message_delta")

# The token count of the same request.
counted = client.messages.count_tokens(model=MODEL, messages=MESSAGES)
assert counted.input_tokens == message.usage.input_tokens, (counted, message.usage)

# A conversation with a system prompt and content blocks: answered from the
# last user turn, and counted as the same request is.
conversation = [
    {"role": "user", "content": "First"},
    {"role": "assistant", "content": "Noted"},
    {"role": "user", "content": [{"type": "text", "text": "Last one"}]},
]
longer = client.messages.create(model=MODEL, max_tokens=256, system="Be brief.", messages=conversation)
assert longer.content[0].text == "You said: Last one", longer.content
assert longer.usage.input_tokens > message.usage.input_tokens, (longer.usage, message.usage)
counted = client.messages.count_tokens(model=MODEL, system="Be brief.", messages=conversation)
assert counted.input_tokens == longer.usage.input_tokens, (counted, longer.usage)

# Errors: typed by the SDK, and in Anthropic's shape.
refused = raises(
    anthropic.AuthenticationError,
    lambda: Anthropic(base_url=BASE_URL, api_key="wrong-key", max_retries=0).messages.create(
        model=MODEL, max_tokens=16, messages=MESSAGES
    ),
)
assert refused.status_code == 401, refused
assert refused.body["type"] == "error", refused.body
assert refused.body["error"]["type"] == "authentication_error", refused.body
raises(
    anthropic.AuthenticationError,
    lambda: x_api_key_client("wrong-key").messages.count_tokens(model=MODEL, messages=MESSAGES),
)

unsupported = raises(
    anthropic.BadRequestError,
    lambda: client.messages.create(model="demo-embedding-1", max_tokens=16, messages=MESSAGES),
)
assert unsupported.body["type"] == "error", unsupported.body
assert unsupported.body["error"]["type"] == "invalid_request_error", unsupported.body
assert "demo-embedding-1" in unsupported.body["error"]["message"], unsupported.body

raises(
    anthropic.NotFoundError,
    lambda: client.messages.create(model="no-such-model", max_tokens=16, messages=MESSAGES),
)
raises(
    anthropic.BadRequestError,
    lambda: client.messages.count_tokens(model="demo-embedding-1", messages=MESSAGES),
)

if EXPECT_UPSTREAM_SAW:
    # Through Portkey, a model that speaks only chat completions: the
    # gateway asks it a chat completion and answers as Anthropic would.
    TRANSLATED = "@openai/gpt-4o-mini"
    message = client.messages.create(
        model=TRANSLATED,
        max_tokens=64,
        system="Be brief.",
        messages=MESSAGES,
        stop_sequences=["END"],
    )
    assert message.type == "message" and message.role == "assistant", message
    assert message.content[0].type == "text" and message.content[0].text, message
    assert message.stop_reason in ("end_turn", "max_tokens"), message
    assert message.usage.input_tokens > 0 and message.usage.output_tokens > 0, message.usage
    with client.messages.stream(model=TRANSLATED, max_tokens=64, messages=MESSAGES) as stream:
        streamed = "".join(stream.text_stream)
        final = stream.get_final_message()
    # The benchmark upstream streams other words than it answers whole.
    assert streamed and final.content[0].text == streamed, (streamed, final)
    assert final.stop_reason in ("end_turn", "max_tokens"), final
    assert final.usage.output_tokens > 0, final.usage
    untranslatable = raises(
        anthropic.BadRequestError,
        lambda: client.messages.create(
            model=TRANSLATED,
            max_tokens=16,
            messages=[{"role": "user", "content": [
                {"type": "document", "source": {"type": "text", "media_type": "text/plain", "data": "x"}}
            ]}],
        ),
    )
    assert untranslatable.body["error"]["code"] == "untranslatable", untranslatable.body
    # A count of tokens is the provider's, never guessed: none for OpenAI.
    raises(
        anthropic.BadRequestError,
        lambda: client.messages.count_tokens(model=TRANSLATED, messages=MESSAGES),
    )

print("python anthropic", anthropic.__version__, "messages via", MODEL, ": all checks passed")

"""The official OpenAI Python SDK on Gatewayz's embeddings and Responses API,
changing only base_url and api_key.

Run by crates/api/tests/api/sdk_endpoints.rs, against the demo provider and
through the real Portkey gateway, with these variables set:

  GATEWAYZ_URL, GATEWAYZ_KEY  where the gateway is, and a key it accepts
  EMBEDDING_MODEL             a model that serves /v1/embeddings
  EXPECT_DIMS                 the length of its vectors when none is asked for
  RESPONSES_MODEL             a model that serves /v1/responses
  PRICED                      "1" when the catalog prices both models

Exits non-zero on the first failed check.
"""

import math
import os

import openai
from openai import OpenAI

BASE_URL = os.environ["GATEWAYZ_URL"] + "/v1"
KEY = os.environ["GATEWAYZ_KEY"]
EMBEDDING_MODEL = os.environ["EMBEDDING_MODEL"]
EXPECT_DIMS = int(os.environ["EXPECT_DIMS"])
RESPONSES_MODEL = os.environ["RESPONSES_MODEL"]
PRICED = os.environ.get("PRICED") == "1"

client = OpenAI(base_url=BASE_URL, api_key=KEY, max_retries=0)


def raises(kind, call):
    try:
        call()
    except kind as error:
        return error
    raise AssertionError(f"expected {kind.__name__}")


def check_gateway_usage(extra, where, cheap=False):
    """The gateway's timings and, for a priced model, its cost: in whole
    micro-dollars, so a few embedding tokens cost 0."""
    usage = (extra or {}).get("gateway_usage")
    assert usage is not None, f"{where}: no gateway_usage in {extra}"
    assert usage["request_ms"] >= usage["upstream_ms"] >= 0, (where, usage)
    if PRICED:
        assert usage["cost_usd"] >= 0 if cheap else usage["cost_usd"] > 0, (where, usage)


def is_unit(vector):
    return abs(math.sqrt(sum(x * x for x in vector)) - 1.0) < 1e-3


# Embeddings. The SDK asks for base64 unless told otherwise and decodes it:
# what it hands back must be floats all the same.
one = client.embeddings.create(model=EMBEDDING_MODEL, input="The quick brown fox")
assert one.object == "list" and len(one.data) == 1, one
vector = one.data[0].embedding
assert isinstance(vector, list) and all(isinstance(x, float) for x in vector), vector[:4]
assert len(vector) == EXPECT_DIMS, (len(vector), EXPECT_DIMS)
assert is_unit(vector), vector
assert one.usage.prompt_tokens > 0, one.usage
check_gateway_usage(one.model_extra, "embeddings", cheap=True)

# A list of inputs: one vector each, in order; the same input, the same vector.
many = client.embeddings.create(
    model=EMBEDDING_MODEL,
    input=["The quick brown fox", "jumps over the lazy dog"],
)
assert [item.index for item in many.data] == [0, 1], many.data
assert all(math.isclose(a, b, abs_tol=1e-6) for a, b in zip(many.data[0].embedding, vector)), (
    many.data[0].embedding,
    vector,
)
assert many.data[0].embedding != many.data[1].embedding, many.data
assert many.usage.prompt_tokens > one.usage.prompt_tokens, (many.usage, one.usage)

# Floats asked for explicitly are the same vector as the decoded base64.
floats = client.embeddings.create(model=EMBEDDING_MODEL, input="The quick brown fox", encoding_format="float")
assert all(math.isclose(a, b, abs_tol=1e-6) for a, b in zip(floats.data[0].embedding, vector)), floats

# Token ids, as the SDK also takes them: one vector per list.
tokens = client.embeddings.create(model=EMBEDDING_MODEL, input=[[1, 2, 3], [4, 5]])
assert [len(item.embedding) for item in tokens.data] == [EXPECT_DIMS, EXPECT_DIMS], tokens.data
assert tokens.data[0].embedding != tokens.data[1].embedding, tokens.data
alone = client.embeddings.create(model=EMBEDDING_MODEL, input=[1, 2, 3])
assert len(alone.data) == 1 and alone.data[0].embedding == tokens.data[0].embedding, alone.data

# `dimensions` is honoured.
short = client.embeddings.create(model=EMBEDDING_MODEL, input="The quick brown fox", dimensions=4)
assert len(short.data[0].embedding) == 4 and is_unit(short.data[0].embedding), short.data

# A model that does not serve embeddings is a typed 400.
refused = raises(
    openai.BadRequestError,
    lambda: client.embeddings.create(model="demo-1", input="hi"),
)
assert refused.code == "model_not_supported", refused.body
assert refused.param == "model", refused.body

# Responses: a whole answer.
created = client.responses.create(model=RESPONSES_MODEL, input="Hello Responses")
assert created.object == "response" and created.status == "completed", created
assert created.output_text == "You said: Hello Responses", created.output_text
assert created.usage.input_tokens > 0 and created.usage.output_tokens > 0, created.usage
assert created.usage.total_tokens == created.usage.input_tokens + created.usage.output_tokens, created.usage
check_gateway_usage(created.model_extra, "responses.create")

# Responses: a stream, whose deltas make the same text, ending on
# `response.completed` with the gateway's usage.
deltas = []
types = []
completed = None
for event in client.responses.create(model=RESPONSES_MODEL, input="Hello Responses", stream=True):
    types.append(event.type)
    if event.type == "response.output_text.delta":
        deltas.append(event.delta)
    elif event.type == "response.completed":
        completed = event
assert types[0] == "response.created" and types[-1] == "response.completed", types
assert "".join(deltas) == "You said: Hello Responses", deltas
assert completed.response.output_text == "You said: Hello Responses", completed.response
assert completed.response.usage.output_tokens > 0, completed.response.usage
check_gateway_usage(completed.model_extra, "response.completed")

# The SDK's stream helper reads the same events.
with client.responses.stream(model=RESPONSES_MODEL, input="Hello helper") as stream:
    helped = "".join(event.delta for event in stream if event.type == "response.output_text.delta")
    final = stream.get_final_response()
assert helped == "You said: Hello helper" and final.output_text == helped, (helped, final)

# Retrieve: the response created above, as it was made.
retrieved = client.responses.retrieve(created.id)
assert retrieved.id == created.id, retrieved
assert retrieved.output_text == created.output_text, retrieved
assert retrieved.model_dump()["output"] == created.model_dump()["output"], retrieved

# The streamed one is kept too.
assert client.responses.retrieve(completed.response.id).output_text == "You said: Hello Responses"

# Its input items: the user's message.
items = list(client.responses.input_items.list(created.id))
assert len(items) == 1 and items[0].type == "message" and items[0].role == "user", items
assert items[0].content[0].text == "Hello Responses", items

# A conversation as input items, with instructions: the answer is to the
# last user turn, and the items come back page by page (the SDK follows
# `after` while `has_more`).
conversation = client.responses.create(
    model=RESPONSES_MODEL,
    instructions="Be brief.",
    input=[
        {"role": "user", "content": "First"},
        {"role": "assistant", "content": "Noted"},
        {"role": "user", "content": [{"type": "input_text", "text": "Last one"}]},
    ],
    max_output_tokens=64,
)
assert conversation.output_text == "You said: Last one", conversation.output_text
assert conversation.instructions == "Be brief." and conversation.max_output_tokens == 64, conversation
page = client.responses.input_items.list(conversation.id, limit=1, order="asc")
assert len(page.data) == 1 and page.has_more, page
texts = [
    (item.role, item.content[0].text)
    for item in client.responses.input_items.list(conversation.id, limit=1, order="asc")
]
assert texts == [("user", "First"), ("assistant", "Noted"), ("user", "Last one")], texts
newest = [item.content[0].text for item in client.responses.input_items.list(conversation.id, order="desc")]
assert newest == ["Last one", "Noted", "First"], newest

# A follow-up that continues the conversation.
follow_up = client.responses.create(
    model=RESPONSES_MODEL,
    input="And again",
    previous_response_id=created.id,
)
assert follow_up.previous_response_id == created.id, follow_up
assert follow_up.output_text == "You said: And again", follow_up.output_text
assert follow_up.id != created.id, follow_up

# Delete, after which it is gone.
assert client.responses.delete(follow_up.id) is None
gone = raises(openai.NotFoundError, lambda: client.responses.retrieve(follow_up.id))
assert gone.status_code == 404, gone
assert client.responses.retrieve(created.id).id == created.id, "only the follow-up is deleted"
raises(openai.NotFoundError, lambda: client.responses.retrieve("resp_never_made"))

# Errors on these paths are typed as well.
raises(
    openai.AuthenticationError,
    lambda: OpenAI(base_url=BASE_URL, api_key="wrong-key", max_retries=0).embeddings.create(
        model=EMBEDDING_MODEL, input="hi"
    ),
)
raises(
    openai.NotFoundError,
    lambda: client.responses.create(model="no-such-model", input="hi"),
)

print(
    "python openai", openai.__version__, "via", EMBEDDING_MODEL, "and", RESPONSES_MODEL, ": all checks passed"
)

"""llama-server through the official OpenAI Python client.

Started by run.sh with --alias smollm2 --api-key sk-test --embeddings.
"""

import json
import os

import openai
import pytest

BASE = os.environ["LLAMA_SERVER_URL"]
KEY = os.environ["LLAMA_SERVER_KEY"]
MODEL = "smollm2"


@pytest.fixture(scope="module")
def client():
    return openai.OpenAI(base_url=BASE + "/v1", api_key=KEY, max_retries=0, timeout=300)


def ask(text):
    return [{"role": "user", "content": text}]


def test_models(client):
    models = client.models.list()
    assert [m.id for m in models.data] == [MODEL]


def test_chat(client):
    r = client.chat.completions.create(model=MODEL, messages=ask("What is 2+2?"), max_tokens=8, temperature=0)
    assert r.object == "chat.completion"
    assert r.id.startswith("chatcmpl-")
    choice = r.choices[0]
    assert choice.message.role == "assistant"
    assert isinstance(choice.message.content, str) and choice.message.content
    assert choice.finish_reason in ("stop", "length")
    assert r.usage.total_tokens == r.usage.prompt_tokens + r.usage.completion_tokens
    assert r.usage.completion_tokens <= 8


def test_chat_stream_with_usage(client):
    stream = client.chat.completions.create(
        model=MODEL,
        messages=ask("Name three colors."),
        max_tokens=10,
        temperature=0,
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    assert len({c.id for c in chunks}) == 1
    assert len({c.created for c in chunks}) == 1
    assert chunks[0].choices[0].delta.role == "assistant"
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices]
    assert finishes[-1] in ("stop", "length")
    assert all(f is None for f in finishes[:-1])
    assert chunks[-1].choices == []
    assert chunks[-1].usage.completion_tokens >= 1
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text


def test_chat_options(client):
    r = client.chat.completions.create(
        model=MODEL,
        messages=ask("Say something."),
        max_completion_tokens=4,
        n=2,
        seed=3,
        logprobs=True,
        top_logprobs=3,
        stop=["\n\n"],
        presence_penalty=0.5,
        frequency_penalty=0.5,
        logit_bias={"1": -100},
        user="someone",
    )
    assert len(r.choices) == 2
    for choice in r.choices:
        for entry in choice.logprobs.content:
            assert entry.logprob <= 0
            assert len(entry.top_logprobs) == 3


def test_json_schema_output(client):
    schema = {
        "type": "object",
        "properties": {"city": {"type": "string", "maxLength": 20}, "sunny": {"type": "boolean"}},
        "required": ["city", "sunny"],
        "additionalProperties": False,
    }
    r = client.chat.completions.create(
        model=MODEL,
        messages=ask("Describe the weather in Paris as JSON."),
        max_tokens=64,
        temperature=0,
        response_format={"type": "json_schema", "json_schema": {"name": "weather", "schema": schema, "strict": True}},
    )
    assert r.choices[0].finish_reason == "stop"
    data = json.loads(r.choices[0].message.content)
    assert set(data) == {"city", "sunny"}
    assert isinstance(data["sunny"], bool)


def test_completions(client):
    r = client.completions.create(model=MODEL, prompt="Once upon a time", max_tokens=5, temperature=0)
    assert r.object == "text_completion"
    assert r.choices[0].text
    assert r.usage.completion_tokens <= 5
    stream = client.completions.create(model=MODEL, prompt="The sky is", max_tokens=4, stream=True)
    text = "".join(c.choices[0].text for c in stream if c.choices)
    assert text


def test_embeddings(client):
    r = client.embeddings.create(model=MODEL, input=["I love cats", "Tax forms are due"])
    assert [d.index for d in r.data] == [0, 1]
    assert all(len(d.embedding) == 576 for d in r.data)
    norm = sum(x * x for x in r.data[0].embedding)
    assert abs(norm - 1.0) < 1e-3
    floats = client.embeddings.create(model=MODEL, input="I love cats", encoding_format="float")
    dot = sum(a * b for a, b in zip(floats.data[0].embedding, r.data[0].embedding))
    assert dot > 0.999


def test_wrong_key_is_authentication_error():
    bad = openai.OpenAI(base_url=BASE + "/v1", api_key="sk-wrong", max_retries=0)
    with pytest.raises(openai.AuthenticationError) as e:
        bad.models.list()
    assert e.value.status_code == 401
    assert e.value.type == "authentication_error"


def test_any_model_name_is_served(client):
    # As llama.cpp: with one model loaded, every `model` value is served by it.
    r = client.chat.completions.create(model="gpt-3.5-turbo", messages=ask("hi"), max_tokens=1)
    assert r.choices[0].finish_reason in ("stop", "length")


def test_bad_request(client):
    with pytest.raises(openai.BadRequestError) as e:
        client.chat.completions.create(model=MODEL, messages=ask("hi"), n=0)
    assert e.value.type == "invalid_request_error"
    assert e.value.param == "n"
    with pytest.raises(openai.BadRequestError) as e:
        client.chat.completions.create(model=MODEL, messages=ask("word " * 3000), max_tokens=1)
    assert e.value.type == "exceed_context_size_error"
    assert e.value.body["n_ctx"] == 2048  # 4096 split across 2 slots

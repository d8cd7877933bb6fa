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


# ---- tool calling ----

WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Get the current weather in a city.",
        "parameters": {
            "type": "object",
            "properties": {
                "city": {"type": "string", "description": "The city.", "maxLength": 40},
                "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
            },
            "required": ["city", "unit"],
            "additionalProperties": False,
        },
    },
}

ADD = {
    "type": "function",
    "function": {
        "name": "add",
        "description": "Add two integers.",
        "parameters": {
            "type": "object",
            "properties": {"a": {"type": "integer"}, "b": {"type": "integer"}},
            "required": ["a", "b"],
        },
    },
}

TYPES = {"string": str, "integer": int, "number": (int, float), "boolean": bool, "object": dict, "array": list}


def check_arguments(text, tool):
    """The call's arguments are a JSON object that follows the tool's schema
    (checked by hand: the test environment has no jsonschema package)."""
    schema = tool["function"]["parameters"]
    args = json.loads(text)
    assert isinstance(args, dict), text
    assert set(schema.get("required", [])) <= set(args), text
    if schema.get("additionalProperties") is False:
        assert set(args) <= set(schema["properties"]), text
    for key, value in args.items():
        prop = schema["properties"][key]
        assert isinstance(value, TYPES[prop["type"]]) and not (prop["type"] == "integer" and isinstance(value, bool)), text
        if "enum" in prop:
            assert value in prop["enum"], text
        if "maxLength" in prop:
            assert len(value) <= prop["maxLength"], text
    return args


def weather_question():
    return [{"role": "user", "content": "What is the weather like in Paris today?"}]


def tool_result(call):
    return {"role": "tool", "tool_call_id": call.id, "content": json.dumps({"temperature": 22, "sky": "sunny"})}


def test_tool_round_trip(client):
    messages = weather_question()
    r = client.chat.completions.create(
        model=MODEL, messages=messages, tools=[WEATHER, ADD], tool_choice="required", max_tokens=96, temperature=0
    )
    choice = r.choices[0]
    assert choice.finish_reason == "tool_calls", choice
    assert choice.message.content is None
    [call] = choice.message.tool_calls
    assert call.type == "function"
    assert call.id.startswith("call_")
    tool = {"get_weather": WEATHER, "add": ADD}[call.function.name]
    check_arguments(call.function.arguments, tool)

    # The assistant's message goes back as the client returned it, then the
    # result. The final turn says `tool_choice="none"`: left to choose, the
    # 135M default model calls the same tool again.
    messages.append(choice.message.model_dump(exclude_none=True))
    messages.append(tool_result(call))
    final = client.chat.completions.create(
        model=MODEL, messages=messages, tools=[WEATHER, ADD], tool_choice="none", max_tokens=64, temperature=0
    )
    answer = final.choices[0]
    assert answer.message.tool_calls is None, answer
    assert answer.finish_reason in ("stop", "length")
    assert isinstance(answer.message.content, str) and answer.message.content.strip()


def stream_message(stream):
    """Merge a streamed message the way OpenAI's clients do; check the
    stream's shape on the way."""
    content, calls, finish = "", {}, None
    for chunk in stream:
        if not chunk.choices:
            continue
        c = chunk.choices[0]
        assert finish is None, "nothing after the finish_reason"
        finish = c.finish_reason
        content += c.delta.content or ""
        for tc in c.delta.tool_calls or []:
            if tc.index not in calls:
                # The first delta of a call has its id, type and name.
                assert tc.id and tc.id.startswith("call_") and tc.type == "function" and tc.function.name, tc
                calls[tc.index] = {"id": tc.id, "name": tc.function.name, "arguments": ""}
            else:
                assert tc.id is None and tc.function.name is None, tc
            calls[tc.index]["arguments"] += tc.function.arguments or ""
    assert sorted(calls) == list(range(len(calls)))
    return content, [calls[i] for i in sorted(calls)], finish


def test_tool_round_trip_streamed(client):
    messages = weather_question()
    stream = client.chat.completions.create(
        model=MODEL, messages=messages, tools=[WEATHER], tool_choice="required", max_tokens=96, temperature=0, stream=True
    )
    content, calls, finish = stream_message(stream)
    assert finish == "tool_calls"
    assert content == ""
    [call] = calls
    assert call["name"] == "get_weather"
    args = check_arguments(call["arguments"], WEATHER)

    # The streamed call equals the one the whole response gives.
    whole = client.chat.completions.create(
        model=MODEL, messages=messages, tools=[WEATHER], tool_choice="required", max_tokens=96, temperature=0
    )
    assert json.loads(whole.choices[0].message.tool_calls[0].function.arguments) == args

    messages.append(
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {"id": call["id"], "type": "function", "function": {"name": call["name"], "arguments": call["arguments"]}}
            ],
        }
    )
    messages.append({"role": "tool", "tool_call_id": call["id"], "content": "22 degrees celsius, sunny"})
    stream = client.chat.completions.create(
        model=MODEL, messages=messages, tools=[WEATHER], tool_choice="none", max_tokens=64, temperature=0, stream=True
    )
    content, calls, finish = stream_message(stream)
    assert calls == []
    assert finish in ("stop", "length")
    assert content.strip()


def test_named_tool_choice(client):
    r = client.chat.completions.create(
        model=MODEL,
        messages=[{"role": "user", "content": "What is 2 plus 3?"}],
        tools=[WEATHER, ADD],
        tool_choice={"type": "function", "function": {"name": "add"}},
        max_tokens=64,
        temperature=0,
    )
    [call] = r.choices[0].message.tool_calls
    assert call.function.name == "add"
    check_arguments(call.function.arguments, ADD)
    assert r.choices[0].finish_reason == "tool_calls"


def test_parallel_tool_calls(client):
    r = client.chat.completions.create(
        model=MODEL,
        messages=[{"role": "user", "content": "Weather in Paris and in Rome?"}],
        tools=[WEATHER],
        tool_choice="required",
        parallel_tool_calls=True,
        max_tokens=160,
        temperature=0,
    )
    choice = r.choices[0]
    if choice.finish_reason == "tool_calls":
        assert len(choice.message.tool_calls) >= 1
        assert len({c.id for c in choice.message.tool_calls}) == len(choice.message.tool_calls)
        for call in choice.message.tool_calls:
            check_arguments(call.function.arguments, WEATHER)
    else:
        # Cut by max_tokens inside the list: the text comes back as content.
        assert choice.finish_reason == "length" and choice.message.content


def test_auto_tool_choice(client):
    # The model chooses: a call or a reply, either well formed.
    for stream in (False, True):
        kwargs = dict(model=MODEL, messages=weather_question(), tools=[WEATHER], max_tokens=96, temperature=0)
        if stream:
            content, calls, finish = stream_message(client.chat.completions.create(stream=True, **kwargs))
        else:
            m = client.chat.completions.create(**kwargs).choices[0]
            content, finish = m.message.content, m.finish_reason
            calls = [{"name": c.function.name, "arguments": c.function.arguments} for c in m.message.tool_calls or []]
        if calls:
            assert finish == "tool_calls"
            for call in calls:
                check_arguments(call["arguments"], WEATHER)
        else:
            assert finish in ("stop", "length") and content


def test_tool_choice_none_answers_in_text(client):
    r = client.chat.completions.create(
        model=MODEL, messages=weather_question(), tools=[WEATHER], tool_choice="none", max_tokens=16, temperature=0
    )
    assert r.choices[0].message.tool_calls is None
    assert r.choices[0].finish_reason in ("stop", "length")


def test_bad_tools_are_400(client):
    with pytest.raises(openai.BadRequestError) as e:
        client.chat.completions.create(
            model=MODEL, messages=weather_question(), tools=[{"type": "function", "function": {"name": "a b"}}]
        )
    assert e.value.param == "tools[0].function.name"
    with pytest.raises(openai.BadRequestError) as e:
        client.chat.completions.create(
            model=MODEL,
            messages=weather_question(),
            tools=[WEATHER],
            tool_choice={"type": "function", "function": {"name": "nope"}},
        )
    assert e.value.param == "tool_choice.function.name"

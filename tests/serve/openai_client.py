"""Drives `zoo serve` with the official `openai` Python client and prints what it got as JSON.

Run by tests/zoo/serve.rs with the Python of a venv that has `openai` (ZOO_OPENAI_PYTHON):

    python openai_client.py BASE_URL CONFIG_JSON

CONFIG_JSON: {"chat_model": id, "messages": [...], "max_tokens": n,
              "completion_prompt": text (optional), "embed_model": id (optional),
              "embed_inputs": [...], "concurrent": n (optional)}
"""

import json
import sys
import threading

import openai


def main():
    base, config = sys.argv[1], json.loads(sys.argv[2])
    client = openai.OpenAI(base_url=base + "/v1", api_key="none", max_retries=0, timeout=300)
    out = {"models": [m.id for m in client.models.list().data]}
    model = config["chat_model"]
    n = config["max_tokens"]

    chat = client.chat.completions.create(
        model=model, messages=config["messages"], max_tokens=n, temperature=0, seed=1
    )
    out["chat"] = {
        "content": chat.choices[0].message.content,
        "role": chat.choices[0].message.role,
        "finish_reason": chat.choices[0].finish_reason,
        "object": chat.object,
        "usage": chat.usage.model_dump(),
    }

    pieces, finish, usage = [], None, None
    stream = client.chat.completions.create(
        model=model,
        messages=config["messages"],
        max_tokens=n,
        temperature=0,
        stream=True,
        stream_options={"include_usage": True},
    )
    for chunk in stream:
        if chunk.usage is not None:
            usage = chunk.usage.model_dump()
        for choice in chunk.choices:
            if choice.delta.content:
                pieces.append(choice.delta.content)
            if choice.finish_reason:
                finish = choice.finish_reason
    out["chat_stream"] = {"content": "".join(pieces), "finish_reason": finish, "usage": usage}

    if "completion_prompt" in config:
        c = client.completions.create(
            model=model, prompt=config["completion_prompt"], max_tokens=n, temperature=0
        )
        out["completion"] = {"text": c.choices[0].text, "usage": c.usage.model_dump()}
        pieces = []
        for chunk in client.completions.create(
            model=model, prompt=config["completion_prompt"], max_tokens=n, temperature=0, stream=True
        ):
            pieces.extend(choice.text for choice in chunk.choices)
        out["completion_stream"] = "".join(pieces)

    if "embed_model" in config:
        # The client asks for base64 by default; ask for floats too.
        e = client.embeddings.create(model=config["embed_model"], input=config["embed_inputs"])
        out["embeddings"] = [d.embedding for d in e.data]
        out["embedding_usage"] = e.usage.model_dump()
        f = client.embeddings.create(
            model=config["embed_model"], input=config["embed_inputs"][0], encoding_format="float"
        )
        out["embedding_float"] = f.data[0].embedding

    errors = {}
    try:
        client.chat.completions.create(model="no-such-model", messages=config["messages"])
    except openai.NotFoundError as e:
        errors["unknown_model"] = {"status": e.status_code, "body": e.body}
    try:
        client.chat.completions.create(model=model, messages=config["messages"], temperature=5)
    except openai.BadRequestError as e:
        errors["temperature"] = {"status": e.status_code, "body": e.body}
    out["errors"] = errors

    count = config.get("concurrent", 0)
    if count:
        results = [None] * count

        def run(i):
            parts = []
            s = client.chat.completions.create(
                model=model, messages=config["messages"], max_tokens=n, temperature=0, stream=True
            )
            for chunk in s:
                for choice in chunk.choices:
                    if choice.delta.content:
                        parts.append(choice.delta.content)
            results[i] = "".join(parts)

        threads = [threading.Thread(target=run, args=(i,)) for i in range(count)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        out["concurrent"] = results

    json.dump(out, sys.stdout)


if __name__ == "__main__":
    main()

"""The example agent: a plain tool loop over the Messages API.

Runs inside Flightdeck's sandbox: `ctx.llm.messages` is the Anthropic Messages API
(through the host's gateway; no key in here), `ctx.tool` runs a tool, `ctx.memory`
remembers across runs, `ctx.state` survives a crash of the worker.
"""

TOOLS = [
    {
        "name": "python",
        "description": "Run Python code and return what it prints.",
        "input_schema": {
            "type": "object",
            "properties": {"code": {"type": "string"}},
            "required": ["code"],
        },
    }
]


def main(ctx, input):
    question = (input or {}).get("question", 'Use python {"code": "print(6 * 7)"}')
    messages = [{"role": "user", "content": question}]
    ctx.state["question"] = question
    for _turn in range(5):
        messages = ctx.context.fit(messages, budget_tokens=50_000)
        reply = ctx.llm.messages(
            system="You are a careful calculator. Use the python tool for arithmetic.",
            messages=messages,
            tools=TOOLS,
            max_tokens=512,
        )
        messages.append({"role": "assistant", "content": reply.content})
        calls = [block for block in reply.content if block.type == "tool_use"]
        if not calls:
            break
        results = []
        for call in calls:
            try:
                output = ctx.tool(call.name, **call.input)
                content, is_error = output.get("output", str(output)), False
            except Exception as exc:  # a tool error is the model's to handle
                content, is_error = str(exc), True
            results.append(
                {
                    "type": "tool_result",
                    "tool_use_id": call.id,
                    "content": content,
                    "is_error": is_error,
                }
            )
        messages.append({"role": "user", "content": results})
    answer = " ".join(block.text for block in reply.content if block.type == "text")
    runs = (ctx.memory.get("runs") or 0) + 1
    ctx.memory.put("runs", runs, text="how many times this agent has run")
    return {"answer": answer, "runs_so_far": runs, "finished_at": ctx.now()}

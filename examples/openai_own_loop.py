"""Your own agent loop with the plain ``openai`` client: the README's own-loop example, as a file.

    export OPENAI_BASE_URL=http://127.0.0.1:8080/v1 OPENAI_API_KEY=none VMEM_MODEL=qwen2.5-coder-1.5b
    python examples/openai_own_loop.py        # creates ana-memory/ in the current directory

The memory compiles the context (system prompt, its own instructions for its functions, core memory,
summary, queue) within the window's budget; the loop calls the model and runs the memory functions
it asks for. After the turn, one consolidation run (``vmem.kernel.consolidation.consolidate``, what
the consolidation daemon does in the background) has the same model write the user's facts to core
memory: Qwen2.5-Coder-1.5B answered the greeting with ``send_message`` alone, and the consolidation
run saved it.
"""

import os
from openai import OpenAI
from vmem.kernel import Memory, consolidate
from vmem.kernel.drivers import OpenAIDriver

client = OpenAI()  # OPENAI_BASE_URL and OPENAI_API_KEY say which server: OpenAI, vLLM, llama.cpp, Ollama...
MODEL = os.environ.get("VMEM_MODEL", "gpt-4o-mini")

def summarize(messages):  # the memory asks for a summary when it evicts old messages
    return client.chat.completions.create(model=MODEL, messages=messages).choices[0].message.content

if Memory.exists("ana-memory"):
    memory = Memory.open("ana-memory")
else:
    memory = Memory.create("ana-memory", system="You are Ana's assistant. Keep her facts in core memory.",
                           blocks={"human": "", "persona": "I am concise and kind."})

def chat(text: str) -> str:
    memory.append({"role": "user", "content": text})
    for _ in range(4):  # your loop, your limits
        reply = memory.assistant_message(client.chat.completions.create(
            model=MODEL, messages=memory.context(summarizer=summarize), tools=memory.tools,
        ).choices[0].message)  # as a dict; calls a small model wrote as JSON in its text become tool calls
        memory.append(reply)  # the assistant message, tool calls and all
        if not reply.get("tool_calls"):
            return reply["content"]
        said = []
        for call in reply["tool_calls"]:
            said += memory.execute(call).replies  # runs the memory function, records its result
        if said:  # send_message: the model spoke to the user
            return "\n".join(said)
    return "(no answer)"

print(chat("Hi! I'm Ana, I just moved to Lisbon."))
# The memory's own curation (the consolidation daemon's run, here in your thread): your model reads the
# new turns and the user's facts go to core memory, other facts to archival. A small model that answered
# without calling its memory functions still leaves them saved.
consolidate(memory, OpenAIDriver(MODEL, client=client, timeout=600))
print(memory.block("human").value)  # what the memory saved about Ana
memory.close()

from openai import OpenAI

client = OpenAI(base_url="http://127.0.0.1:8000/v1", api_key="unused-while-auth-is-off")
print([model.id for model in client.models.list()])
answer = client.chat.completions.create(
    model="auto", messages=[{"role": "user", "content": "What is a lake?"}]
)
print(answer.choices[0].message.content)

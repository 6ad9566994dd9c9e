curl 'http://127.0.0.1:8000/v1/conversations/my-first-chat?limit=1'

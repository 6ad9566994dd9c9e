curl "http://127.0.0.1:8000/v1/usage?from=$(date -u +%Y-%m-01)&to=$(date -u +%F)&group_by=provider"

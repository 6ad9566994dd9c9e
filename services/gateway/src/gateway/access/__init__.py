"""Who may call: authentication (JWT, API keys), browser origins, credentials kept out of logs."""

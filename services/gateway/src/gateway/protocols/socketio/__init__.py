"""/socket.io/: the Socket.IO endpoint (python-socketio, protocol v4+)."""

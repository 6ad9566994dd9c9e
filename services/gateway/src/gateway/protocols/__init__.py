"""The client protocols, each a thin adapter over intake/ and fanout/, and the web page."""

"""The runtime port: its HTTP/1.1 front, the front worker processes and the channel between them."""

"""Wire protocols, each a parser (request -> params) and serializer (result -> response).

Everything is driven by botocore's shapes; no module here knows an operation by name.
"""

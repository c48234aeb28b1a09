"""Wire protocols: one object per family, each a parser (request -> params) and serializer (result -> response).

:class:`~sagestack.aws.protocols.base.WireProtocol` is what the gateway sees;
:mod:`.json`, :mod:`.query`, :mod:`.rest` (rest-json), :mod:`.rest_xml` and
:mod:`.s3` (S3's dialect of rest-xml) implement it, and the catalog picks one
per route. Everything is driven by botocore's shapes; no module here knows an
operation by name.
"""

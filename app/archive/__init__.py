"""The archive: the gateway's own copy of each completed export's CSV, kept past upstream's
link retention and served by ``/csv`` once it exists. ``storage`` is the object-store layer
(``file://``, ``s3://``) that anything needing durable files of its own writes through."""

"""Reading inputs and writing outputs: local files (``locations``), Google Cloud Storage (``gcs``),
https image URLs (``fetch``), image checks (``images``) and their errors (``errors``)."""

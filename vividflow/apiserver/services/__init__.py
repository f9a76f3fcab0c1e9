"""Operations on the database that routes, the CLI and job backends share."""

"""The Clickwrap API as the gateway sees it: one typed client, defensive parsing, the filter
grammar, request pacing, a site's export fields and one page of raw activity."""

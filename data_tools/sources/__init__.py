"""Source readers: each turns one raw input file (WARC, WET, Wikipedia XML, JSONL) into Documents."""

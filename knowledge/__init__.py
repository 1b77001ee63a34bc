"""The domain knowledge the whole product shares, on the lowest floor (it imports no other package of
ours): the fact registry and its checker, topics and categories, the system prompt, the register
lexicon, personal-data detection, and the review checklist a record or a correction must pass."""

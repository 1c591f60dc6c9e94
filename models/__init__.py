"""peewee models: the data, the account-scoped queries and the domain rules."""

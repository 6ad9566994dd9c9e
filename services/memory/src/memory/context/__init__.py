"""The context of a reply: history, knowledge passages and personal memory, within a budget."""

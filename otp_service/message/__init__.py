"""Request to Message: recipients, templates, Logto placeholders, composing."""

"""Commands that make what ``assets/`` ships: they train, they are not run by the app."""

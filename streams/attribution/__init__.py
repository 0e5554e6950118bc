"""The attribution worker: which list led to which click, cart and purchase, per variant."""

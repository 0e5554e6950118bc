"""The operations service: lag judged per group, the end-to-end canary, the data-quality scorecard and the live page."""

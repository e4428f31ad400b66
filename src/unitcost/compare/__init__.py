"""What it would cost otherwise: what-if repricing, cost levers, and price-change explanations.

Everything here starts from the recorded ledger, aggregated in SQL (`workload`), and prices
aggregated quantities exactly with the PriceBook (`costing`). Pricing is linear per
component inside one price option and prompt-length tier, so a sum of quantities priced
once equals the sum of per-call costs, to the pico-dollar.
"""

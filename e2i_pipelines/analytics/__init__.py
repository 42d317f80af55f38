"""Analytics libraries behind the assets: TreeSHAP, fast refutations, digital twins."""

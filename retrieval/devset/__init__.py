"""The retrieval dev set: posts, labelled queries, and the script that builds them."""

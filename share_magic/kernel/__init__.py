"""What runs inside the user's kernel: finding its Jupyter server, the share as a client of its helper, the
``%share`` magic and its widget, and saving the ngrok authtoken. Nothing here serves visitors."""

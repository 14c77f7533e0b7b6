"""What runs in the share's helper process (``python -m share_magic.helper``): the owner of one share, the gate
(access, identity), the relay in front of Jupyter (gateway, bridge), the view-only page, the meter and the tunnel."""

"""Reinforcement learning: SAC/RLPD agent, replay buffers, checkpoints."""

"""Threshold rules over every service's facts; alert lifecycle; notifications."""
